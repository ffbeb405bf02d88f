-- The paper-shaped benchmark table: one row per model; per column the headline value, n, its 95% interval, the
-- paired difference from the base model with its interval and whether that interval excludes zero (`_sig`).
-- HH / HH-A: the judge's parsed score 1..10; ETHICS = ethics_cm; hh_preference: length-normalised accuracy; the
-- rest accuracies. mic_proxy is not MIC (its data is not obtainable) and is in no average. Our checkpoints (source
-- = 'measured') are stacked on the paper's reported rows (source = 'paper').
CREATE OR REPLACE VIEW benchmark_cells AS
SELECT r.checkpoint AS model, r.kind, r.task, r.metric, r.value, r.n, r.ci_low, r.ci_high, r.ci_method,
       r.dataset_source, r.judge_model, r.self_judged, r.evaluated_at,
       c.n AS paired_n, c.diff, c.ci_low AS diff_low, c.ci_high AS diff_high, c.p_value, c.test,
       c.excludes_zero AS diff_excludes_zero
FROM benchmark_results r
LEFT JOIN benchmark_comparisons c
    ON c.checkpoint = r.checkpoint AND c.task = r.task AND c.metric = r.metric AND c.reference = 'base';

CREATE OR REPLACE VIEW benchmark_table AS
WITH long AS (
    SELECT 'measured' AS source, model, kind,
           CASE task WHEN 'ethics_cm' THEN 'ethics' ELSE task END AS task,
           value, n, ci_low, ci_high, diff, diff_low, diff_high, diff_excludes_zero, self_judged, dataset_source,
           evaluated_at, CAST(NULL AS INTEGER) AS paper_order
    FROM benchmark_cells
    WHERE (task IN ('hh', 'hh_a') AND metric = 'score')
       OR (task IN ('moral_stories', 'mic_proxy', 'ethics_cm', 'truthfulqa_mc1') AND metric = 'acc')
       OR (task = 'hh_preference' AND metric = 'acc_norm')
    UNION ALL
    SELECT 'paper', model, kind, task, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'paper', NULL, paper_order
    FROM paper_reported_results
)
SELECT
    source,
    model,
    any_value(kind) AS kind,
    max(value) FILTER (WHERE task = 'hh') AS hh,
    max(value) FILTER (WHERE task = 'hh_a') AS hh_a,
    max(value) FILTER (WHERE task = 'moral_stories') AS moral_stories,
    max(value) FILTER (WHERE task = 'mic') AS mic,  -- the paper's MIC; never measured here
    max(value) FILTER (WHERE task = 'mic_proxy') AS mic_proxy,
    max(value) FILTER (WHERE task = 'ethics') AS ethics,
    max(value) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1,
    max(value) FILTER (WHERE task = 'hh_preference') AS hh_preference,
    max(n) FILTER (WHERE task = 'hh') AS hh_n,
    max(ci_low) FILTER (WHERE task = 'hh') AS hh_low,
    max(ci_high) FILTER (WHERE task = 'hh') AS hh_high,
    max(diff) FILTER (WHERE task = 'hh') AS hh_diff,
    max(diff_low) FILTER (WHERE task = 'hh') AS hh_diff_low,
    max(diff_high) FILTER (WHERE task = 'hh') AS hh_diff_high,
    bool_or(diff_excludes_zero) FILTER (WHERE task = 'hh') AS hh_sig,
    max(n) FILTER (WHERE task = 'hh_a') AS hh_a_n,
    max(ci_low) FILTER (WHERE task = 'hh_a') AS hh_a_low,
    max(ci_high) FILTER (WHERE task = 'hh_a') AS hh_a_high,
    max(diff) FILTER (WHERE task = 'hh_a') AS hh_a_diff,
    max(diff_low) FILTER (WHERE task = 'hh_a') AS hh_a_diff_low,
    max(diff_high) FILTER (WHERE task = 'hh_a') AS hh_a_diff_high,
    bool_or(diff_excludes_zero) FILTER (WHERE task = 'hh_a') AS hh_a_sig,
    max(n) FILTER (WHERE task = 'moral_stories') AS moral_stories_n,
    max(ci_low) FILTER (WHERE task = 'moral_stories') AS moral_stories_low,
    max(ci_high) FILTER (WHERE task = 'moral_stories') AS moral_stories_high,
    max(diff) FILTER (WHERE task = 'moral_stories') AS moral_stories_diff,
    max(diff_low) FILTER (WHERE task = 'moral_stories') AS moral_stories_diff_low,
    max(diff_high) FILTER (WHERE task = 'moral_stories') AS moral_stories_diff_high,
    bool_or(diff_excludes_zero) FILTER (WHERE task = 'moral_stories') AS moral_stories_sig,
    max(n) FILTER (WHERE task = 'mic_proxy') AS mic_proxy_n,
    max(ci_low) FILTER (WHERE task = 'mic_proxy') AS mic_proxy_low,
    max(ci_high) FILTER (WHERE task = 'mic_proxy') AS mic_proxy_high,
    max(diff) FILTER (WHERE task = 'mic_proxy') AS mic_proxy_diff,
    max(diff_low) FILTER (WHERE task = 'mic_proxy') AS mic_proxy_diff_low,
    max(diff_high) FILTER (WHERE task = 'mic_proxy') AS mic_proxy_diff_high,
    bool_or(diff_excludes_zero) FILTER (WHERE task = 'mic_proxy') AS mic_proxy_sig,
    max(n) FILTER (WHERE task = 'ethics') AS ethics_n,
    max(ci_low) FILTER (WHERE task = 'ethics') AS ethics_low,
    max(ci_high) FILTER (WHERE task = 'ethics') AS ethics_high,
    max(diff) FILTER (WHERE task = 'ethics') AS ethics_diff,
    max(diff_low) FILTER (WHERE task = 'ethics') AS ethics_diff_low,
    max(diff_high) FILTER (WHERE task = 'ethics') AS ethics_diff_high,
    bool_or(diff_excludes_zero) FILTER (WHERE task = 'ethics') AS ethics_sig,
    max(n) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1_n,
    max(ci_low) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1_low,
    max(ci_high) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1_high,
    max(diff) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1_diff,
    max(diff_low) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1_diff_low,
    max(diff_high) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1_diff_high,
    bool_or(diff_excludes_zero) FILTER (WHERE task = 'truthfulqa_mc1') AS truthfulqa_mc1_sig,
    max(n) FILTER (WHERE task = 'hh_preference') AS hh_preference_n,
    max(ci_low) FILTER (WHERE task = 'hh_preference') AS hh_preference_low,
    max(ci_high) FILTER (WHERE task = 'hh_preference') AS hh_preference_high,
    max(diff) FILTER (WHERE task = 'hh_preference') AS hh_preference_diff,
    max(diff_low) FILTER (WHERE task = 'hh_preference') AS hh_preference_diff_low,
    max(diff_high) FILTER (WHERE task = 'hh_preference') AS hh_preference_diff_high,
    bool_or(diff_excludes_zero) FILTER (WHERE task = 'hh_preference') AS hh_preference_sig,
    bool_or(self_judged) FILTER (WHERE task IN ('hh', 'hh_a')) AS self_judged,
    string_agg(DISTINCT dataset_source, '+' ORDER BY dataset_source) AS datasets,
    max(evaluated_at) AS evaluated_at,
    min(paper_order) AS paper_order
FROM long
GROUP BY source, model;
