"""evaluate_checkpoint end to end on a tiny checkpoint: rows in benchmark_results and benchmark_judgements,
re-evaluation replaces them, the pivot stacks ours on the paper's reported rows, markdown + chart, MLflow."""

from datetime import datetime

import duckdb
import pytest

from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.evaluation.judge import SCORE_CANDIDATES
from alignment_pipeline.evaluation.metrics import MetricRow
from alignment_pipeline.evaluation.report import benchmark_chart_png, benchmark_markdown
from alignment_pipeline.evaluation.results import (
    checkpoint_kind,
    evaluate_checkpoint,
    log_metrics_to_run,
    write_results,
)
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.llm.tiny import build_tiny_model
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.warehouse.db import Warehouse

PAPER_MODELS = 11


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture
def warehouse(tmp_path):
    return Warehouse(tmp_path / "warehouse.duckdb")


def _judge(score):
    want = SCORE_CANDIDATES[score - 1]
    return ScriptedLLM(scorer=lambda p, cands: [0.0 if c == want else -60.0 for c in cands], model_name="judge-x")


def _config(**kw):
    return EvaluationConfig(tasks=["mic", "hh", "hh_a"], limit=4, hh_limit=3, max_new_tokens=6,
                            device="cpu", **kw)


def test_evaluate_checkpoint_writes_and_replaces_rows(tiny, warehouse):
    first = datetime(2026, 1, 1, 12, 0)
    report = evaluate_checkpoint(warehouse, checkpoint="stage1_imitation", kind="stage", model_path=tiny,
                                 config=_config(), judge=_judge(7), now=first)
    stored = warehouse.query("SELECT task, metric, value, stderr, n, dataset_source, judge_model, evaluated_at "
                             "FROM benchmark_results ORDER BY task, metric")
    assert stored.height == report.rows_written == 7  # mic/acc + 3 metrics each for hh and hh_a
    by = {(r["task"], r["metric"]): r for r in stored.iter_rows(named=True)}
    assert 0.0 <= by[("mic", "acc")]["value"] <= 1.0 and by[("mic", "acc")]["n"] == 4
    assert by[("hh", "score")]["value"] == pytest.approx(7.0, abs=1e-6) and by[("hh", "score")]["n"] == 3
    assert by[("hh_a", "unscored")]["value"] == 0.0
    assert by[("hh", "score")]["judge_model"] == "judge-x" and by[("mic", "acc")]["judge_model"] is None
    assert set(stored["dataset_source"]) == {"fixture"} and set(stored["evaluated_at"]) == {first}
    judgements = warehouse.query("SELECT task, item_id, score, method FROM benchmark_judgements ORDER BY task, item_id")
    assert judgements.height == 6 and set(judgements["method"]) == {"logprob"}
    meta = report.metadata()
    assert meta["bench/hh/score"] == pytest.approx(7.0, abs=1e-6) and meta["kind"] == "stage"
    assert meta["dataset_sources"]["mic"] == "fixture" and "seconds/lm_eval" in meta

    # re-evaluating replaces the checkpoint's rows (no duplicates, new values); other checkpoints stay
    write_results(warehouse, checkpoint="base", kind="base", model_path=tiny,
                  rows=[MetricRow("mic", "acc", 0.25, 0.1, 4, "fixture")], hh_results=[], evaluated_at=first,
                  tasks=["mic"])
    later = datetime(2026, 1, 2, 12, 0)
    evaluate_checkpoint(warehouse, checkpoint="stage1_imitation", kind="stage", model_path=tiny,
                        config=_config(), judge=_judge(3), now=later)
    assert warehouse.count("benchmark_results", "checkpoint = 'stage1_imitation'") == 7
    assert warehouse.count("benchmark_judgements") == 6
    hh = warehouse.query("SELECT value, evaluated_at FROM benchmark_results "
                         "WHERE checkpoint = 'stage1_imitation' AND task = 'hh' AND metric = 'score'").row(0)
    assert hh[0] == pytest.approx(3.0, abs=1e-6) and hh[1] == later
    assert warehouse.count("benchmark_results", "checkpoint = 'base'") == 1

    # the pivot: the paper's reported rows plus ours, in the paper's columns
    table = warehouse.named_query("benchmark_table")
    assert table.height == PAPER_MODELS + 2
    assert table.columns[:4] == ["model", "kind", "source", "datasets"]
    ours = {r["model"]: r for r in table.filter(table["source"] == "measured").iter_rows(named=True)}
    assert list(ours) == ["base", "stage1_imitation"]  # base first
    assert ours["stage1_imitation"]["hh"] == pytest.approx(3.0, abs=0.01)
    assert ours["base"]["mic"] == 0.25 and ours["base"]["hh"] is None
    assert ours["stage1_imitation"]["datasets"] == "fixture"
    paper = {r["model"]: r for r in table.filter(table["source"] == "paper").iter_rows(named=True)}
    assert len(paper) == PAPER_MODELS
    sa = paper["Stable Alignment (IL+SC+RA)"]
    assert (sa["hh"], sa["hh_a"], sa["moral_stories"], sa["mic"], sa["ethics"], sa["truthfulqa_mc1"]) == (
        7.35, 8.23, 0.78, 0.73, 0.65, 0.53)
    assert paper["LLaMA"]["kind"] == "base" and paper["ChatGPT (reference)"]["kind"] == "reference"


def test_bad_input_is_refused_before_any_work(tiny, warehouse):
    with pytest.raises(ValueError, match="kind 'final'"):
        evaluate_checkpoint(warehouse, checkpoint="x", kind="final", model_path=tiny, config=_config(),
                            judge=_judge(5))
    with pytest.raises(ValueError, match="no offline task 'ap_nope'"):
        evaluate_checkpoint(warehouse, checkpoint="x", kind="base", model_path=tiny,
                            config=EvaluationConfig(tasks=["ap_nope"]), judge=_judge(5))
    assert [checkpoint_kind(c) for c in ("base", "stage2_self_critique", "dpo")] == [
        "base", "stage", "baseline"]
    with pytest.raises(ValueError, match="distinct"):
        EvaluationConfig(tasks=["mic", "mic"])
    # the table itself refuses what the code would refuse
    with pytest.raises(duckdb.ConstraintException), warehouse.transaction() as con:
        con.execute("INSERT INTO benchmark_results VALUES ('c', 'base', 'mic', 'acc', 0.5, NULL, 4, 'made-up', "
                    "NULL, NULL, now())")
    assert warehouse.count("benchmark_results") == 0


def test_markdown_and_chart(warehouse, tmp_path):
    when = datetime(2026, 1, 1)
    write_results(warehouse, checkpoint="sft", kind="baseline", model_path="m", evaluated_at=when, hh_results=[],
                  tasks=["mic", "truthfulqa_mc1"],
                  rows=[MetricRow("mic", "acc", 0.5, 0.125, 8, "fixture"),
                        MetricRow("truthfulqa_mc1", "acc", 0.375, 0.18, 8, "real")])
    text = benchmark_markdown(warehouse)
    lines = text.strip().splitlines()
    assert lines[0] == ("| model | kind | source | HH | HH-A | Moral Stories | MIC | ETHICS | TruthfulQA MC1 "
                        "| data |")
    assert lines[2] == "| sft | baseline | measured | – | – | – | 0.500 ± 0.125 | – | 0.375 ± 0.180 | fixture+real |"
    assert "| Stable Alignment (IL+SC+RA) | stage | paper | 7.35 | 8.23 | 0.78 | 0.73 | 0.65 | 0.53 | paper |" in lines
    assert len(lines) == 2 + 1 + PAPER_MODELS
    assert len(benchmark_markdown(warehouse, include_paper=False).strip().splitlines()) == 3
    png = benchmark_chart_png(warehouse, tmp_path / "charts" / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_mlflow_metrics_on_an_existing_run(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after: configure() exports it

    from alignment_pipeline.tracking import start_run

    rows = [MetricRow("mic", "acc", 0.5, 0.1, 8, "fixture"), MetricRow("hh", "score", 6.25, 0.3, 4, "fixture"),
            MetricRow("hh", "score_std", None, None, 1, "fixture")]
    assert log_metrics_to_run(None, rows) == 0
    home = HomeLayout(tmp_path / "home")
    with start_run(home, "train stage1") as run:
        run_id = run.info.run_id
    assert log_metrics_to_run(run_id, rows, home=home) == 2  # the undefined std is not logged
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert metrics == {"bench/mic/acc": 0.5, "bench/hh/score": 6.25}
