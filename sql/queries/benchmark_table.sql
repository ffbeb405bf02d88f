-- The paper-style benchmark table: our checkpoints (base, stages, baselines) first, then the paper's reported rows.
-- Each measured cell has n and a 95% interval in benchmark_table's <column>_n / _low / _high columns and its paired
-- difference from base in _diff / _diff_low / _diff_high / _sig. mic is the paper's MIC; mic_proxy is not MIC.
SELECT
    model, kind, source, datasets, self_judged,
    round(hh, 2) AS hh, round(hh_a, 2) AS hh_a, round(moral_stories, 3) AS moral_stories, round(mic, 3) AS mic,
    round(ethics, 3) AS ethics, round(truthfulqa_mc1, 3) AS truthfulqa_mc1, round(hh_preference, 3) AS hh_preference,
    round(mic_proxy, 3) AS mic_proxy, truthfulqa_mc1_n, truthfulqa_mc1_diff, truthfulqa_mc1_sig, evaluated_at
FROM benchmark_table
ORDER BY
    source = 'paper',
    paper_order,
    CASE WHEN kind = 'base' THEN 0 WHEN kind LIKE 'stage%' THEN 1 WHEN kind = 'baseline' THEN 2 ELSE 3 END,
    model
