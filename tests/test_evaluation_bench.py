"""`alignment-pipeline bench eval` at toy size: a tiny model, a few TruthfulQA items, our scorer and lm-eval's own
simple_evaluate on the same rows, side by side in one run; the per-item verdicts must agree."""

import pytest

from alignment_pipeline.evaluation.bench import bench_eval


@pytest.mark.slow
def test_bench_eval_times_both_sides_on_the_same_items(tmp_path, one_torch_thread):
    from alignment_pipeline.llm.models import resolve_model_path

    model = resolve_model_path("tiny:bench-eval", tmp_path / "models")
    bench = bench_eval(model, "truthfulqa_mc1", items=4, batch_size=4)
    assert bench.items == 4 and bench.ours_s > 0 and bench.lm_eval_s > 0
    assert bench.agree == 4 and bench.ours_acc == bench.lm_eval_acc
    lines = bench.lines()
    assert lines[0] == "task truthfulqa_mc1, 4 items, same model and rows on both sides"
    assert lines[-1].startswith("  speed-up ") and "agree on 4/4" in lines[-1]
