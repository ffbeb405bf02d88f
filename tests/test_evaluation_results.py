"""evaluate_checkpoint end to end on a tiny checkpoint: one model load for every task, per-item rows keyed by the
shipped file's row index, cells with n and intervals, the paired comparison with base, re-evaluation replaces."""

from datetime import datetime

import pytest

from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.evaluation.report import benchmark_chart_png, benchmark_markdown
from alignment_pipeline.evaluation.results import evaluate_checkpoint
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.llm.tiny import build_tiny_model
from alignment_pipeline.warehouse.db import Warehouse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    tiny = str(build_tiny_model(root / "tiny"))
    warehouse = Warehouse(root / "w.duckdb")
    judge = ScriptedLLM(responder=lambda p: " 6\nReason: ok", model_name="tiny-judge")
    config = EvaluationConfig(tasks=["ethics_cm", "mic_proxy", "hh"], limit=5, hh_limit=2, max_new_tokens=4,
                              device="cpu")
    reports = {c: evaluate_checkpoint(warehouse, checkpoint=c, kind="base" if c == "base" else "baseline",
                                      model_path=tiny, config=config, judge=judge, base_models=["tiny-judge"],
                                      now=datetime(2026, 1, 1))
               for c in ("base", "sft")}
    return warehouse, reports, judge


def test_cells_items_and_comparisons(evaluated, tmp_path):
    warehouse, reports, judge = evaluated
    cells = {(r["model"], r["task"], r["metric"]): r for r in warehouse.query(
        "SELECT * FROM benchmark_cells").iter_rows(named=True)}
    ethics = cells[("sft", "ethics_cm", "acc")]
    assert ethics["n"] == 5 and ethics["ci_low"] <= ethics["value"] <= ethics["ci_high"]
    assert ethics["ci_method"] == "wilson" and ethics["dataset_source"] == "real"
    assert cells[("sft", "mic_proxy", "acc")]["dataset_source"] == "proxy"
    # the same model on the same items: a zero difference whose interval does not exclude zero
    assert ethics["paired_n"] == 5 and ethics["diff"] == 0 and ethics["diff_excludes_zero"] is False
    hh = cells[("sft", "hh", "score")]
    assert hh["value"] == 6.0 and hh["self_judged"] is True and hh["ci_method"] == "bootstrap"
    assert cells[("sft", "hh", "win_rate")]["value"] == 0.5  # identical answers tie
    items = warehouse.query("SELECT * FROM benchmark_items WHERE checkpoint = 'sft' AND task = 'ethics_cm'")
    assert items.height == 5 and set(items["file"]) == {"ethics_commonsense_test.csv"}
    assert items["item_id"].to_list() == sorted(items["item_id"].to_list())
    # the base's judgements were reused: the judge was asked once per prompt, for base only
    assert len([p for p in judge.prompts if "Score:" in p]) == 2
    assert reports["base"].seeded_removed["hh"] >= 356
    text = benchmark_markdown(warehouse, include_paper=False)
    assert "n=5; Δ +0.000" in text and "(self-judged)" in text
    assert "| MIC proxy" not in text and "MIC proxy (hand-written items, **not MIC**; in no headline): base" in text
    assert benchmark_chart_png(warehouse, tmp_path / "c.png").stat().st_size > 10_000


def test_reevaluation_replaces_rows(evaluated):
    warehouse, _, judge = evaluated
    before = warehouse.count("benchmark_items", "checkpoint = 'sft'")
    config = EvaluationConfig(tasks=["ethics_cm"], limit=3, device="cpu")
    evaluate_checkpoint(warehouse, checkpoint="sft", kind="baseline",
                        model_path=warehouse.query("SELECT model_path FROM benchmark_results LIMIT 1").item(),
                        config=config, judge=judge)
    assert warehouse.count("benchmark_items", "checkpoint = 'sft' AND task = 'ethics_cm'") == 3
    assert warehouse.count("benchmark_items", "checkpoint = 'sft'") == before - 2
    assert warehouse.query("SELECT n FROM benchmark_comparisons WHERE checkpoint = 'sft' AND task = 'ethics_cm'"
                           ).item() == 3


def test_self_judged_follows_the_lineage(tmp_path):
    from alignment_pipeline.evaluation.results import _is_self_judged

    warehouse = Warehouse(tmp_path / "w.duckdb")
    with warehouse.transaction() as con:
        for name, base, parent in (("stage1_imitation", "smollm2-135m-instruct", None),
                                   ("stage2_self_critique", "/m/stage1_imitation", "stage1_imitation")):
            con.execute("INSERT INTO checkpoints (name, kind, objective, path, base_model, parent_checkpoint, "
                        "samples_batches, steps, created_at) VALUES (?, ?, 'sft', ?, ?, ?, [], 2, now())",
                        [name, name, f"/m/{name}", base, parent])
    assert _is_self_judged(warehouse, "smollm2-135m-instruct", "stage2_self_critique", "/m/stage2_self_critique", ())
    assert _is_self_judged(warehouse, "smollm2-135m-instruct", "base", "/home/models/smollm2-135m-instruct", ())
    assert not _is_self_judged(warehouse, "qwen-72b", "stage2_self_critique", "/m/stage2_self_critique", ())
