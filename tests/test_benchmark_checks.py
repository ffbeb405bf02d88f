"""The benchmark asset's checks warn (never fail) where numbers cannot carry a claim: rows identical to base, too
few items, no difference from base beyond its 95% interval. Its chart labels every benchmark with data source and
n, keeps the paper's reported rows in a grey panel of their own, draws thin whiskers and a legend inside the image;
its overview carries every measured model as an inline table."""

from datetime import datetime

import dagster as dg
import pytest

from alignment_pipeline.checks import run_checks
from alignment_pipeline.evaluation.checks import BENCHMARK_CHECKS
from alignment_pipeline.evaluation.choice_eval import ItemResult, accuracy_row
from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.evaluation.judge import interval_row
from alignment_pipeline.evaluation.results import write_results
from alignment_pipeline.warehouse.db import Warehouse

FILE = "truthfulqa_mc1_validation.parquet"


def _write(warehouse, checkpoint: str, correct: list[float], *, scores: list[float] = ()) -> None:
    """`checkpoint`'s TruthfulQA MC1 items (1: right) and, given scores, HH judge scores, with per-item rows so
    the paired comparison with base is computed."""
    kind = "base" if checkpoint == "base" else "baseline"
    rows = [accuracy_row("truthfulqa_mc1", "acc", correct, "real")]
    items = [ItemResult("truthfulqa_mc1", "acc", FILE, i, "0", v, bool(v)) for i, v in enumerate(correct)]
    if scores:
        rows.append(interval_row("hh", "score", list(scores)))
        items += [ItemResult("hh", "score", "hh.jsonl", i, f"{s:g}", s, None) for i, s in enumerate(scores)]
    write_results(warehouse, checkpoint=checkpoint, kind=kind, model_path="m", rows=rows, hh_results=[],
                  evaluated_at=datetime(2026, 1, 1), tasks=["truthfulqa_mc1", "hh"], items=items)


def _outcomes(warehouse, checkpoint: str, min_items: int = 200) -> dict:
    config = EvaluationConfig(min_items_for_claims=min_items)
    return {o.name: o for o in run_checks(BENCHMARK_CHECKS, warehouse=warehouse, checkpoint=checkpoint,
                                          config=config)}


@pytest.fixture
def warehouse(tmp_path):
    return Warehouse(tmp_path / "w.duckdb")


def test_a_copy_of_base_on_few_items_warns_three_times(warehouse):
    _write(warehouse, "base", [1, 0, 1, 0, 1, 0, 0, 0])
    _write(warehouse, "sft", [1, 0, 1, 0, 1, 0, 0, 0])
    checks = _outcomes(warehouse, "sft")
    assert {name: (o.passed, o.severity) for name, o in checks.items()} == {
        "differs_from_base": (False, "WARN"), "enough_items": (False, "WARN"),
        "detectable_difference": (False, "WARN")}
    assert checks["differs_from_base"].description.startswith("identical to base on every task (TruthfulQA MC1)")
    assert checks["enough_items"].description == "fewer than 200 items: TruthfulQA MC1 n=8"
    assert "no detectable difference from base on any of 1 tasks" in checks["detectable_difference"].description
    assert checks["detectable_difference"].metadata["differences_vs_base"]["TruthfulQA MC1"].startswith("+0.000 [")
    assert _outcomes(warehouse, "sft", min_items=8)["enough_items"].passed


def test_a_clear_gain_on_enough_items_passes(warehouse):
    _write(warehouse, "base", [0.0] * 150 + [1.0] * 100)
    _write(warehouse, "sft", [1.0] * 250)
    checks = _outcomes(warehouse, "sft")
    assert all(o.passed and o.severity == "WARN" for o in checks.values()), checks
    assert checks["detectable_difference"].description.startswith("detectable difference from base on "
                                                                  "TruthfulQA MC1")
    assert checks["enough_items"].metadata["items"] == {"TruthfulQA MC1": 250}


def test_a_difference_within_noise_is_described_as_such(warehouse):
    _write(warehouse, "base", [1, 0] * 150)
    _write(warehouse, "sft", [1, 0] * 149 + [1, 1])  # one item more right of 300
    checks = _outcomes(warehouse, "sft")
    assert checks["differs_from_base"].passed and checks["enough_items"].passed
    assert (checks["detectable_difference"].passed, checks["detectable_difference"].severity) == (False, "WARN")


def test_base_and_an_unevaluated_model(warehouse):
    _write(warehouse, "base", [1, 0, 1])
    base = _outcomes(warehouse, "base")
    assert base["differs_from_base"].passed and base["detectable_difference"].passed
    assert base["differs_from_base"].metadata["applicable"] is False
    missing = _outcomes(warehouse, "dpo")
    assert (missing["enough_items"].passed, missing["enough_items"].severity) == (False, "WARN")
    assert missing["enough_items"].description.startswith("not evaluated")
    assert missing["differs_from_base"].passed  # nothing to compare: not applicable


def test_every_check_is_described_and_warns_only():
    from alignment_pipeline.defs.evaluation import benchmark_tables

    specs = {spec.name: spec for spec in benchmark_tables.check_specs}
    assert set(specs) == {c.name for c in BENCHMARK_CHECKS}
    assert all(spec.description and not spec.blocking for spec in specs.values())


# -- the chart ---------------------------------------------------------------------------------------------------

def _inside(fig, artist) -> bool:
    box, frame = artist.get_window_extent(), fig.bbox
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def _chart_checks(fig) -> list[str]:
    """The measured panel's tick labels, after asserting the layout: labels and legends inside the image, the
    paper's panel grey, whiskers thin."""
    import matplotlib.colors as mcolors

    fig.canvas.draw()
    measured, paper = fig.axes[:2], fig.axes[2:]
    labels = [t for ax in measured for t in ax.get_xticklabels()]
    assert all(_inside(fig, t) for ax in fig.axes for t in ax.get_xticklabels())
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends and all(_inside(fig, legend) for legend in legends)
    assert paper and all(mcolors.to_hex(ax.get_facecolor()) != "#ffffff" for ax in paper)
    assert all(mcolors.to_hex(ax.get_facecolor()) == "#ffffff" for ax in measured)
    whiskers = [c for ax in measured for c in ax.collections if c.get_linewidths().size]
    assert whiskers and max(w for c in whiskers for w in c.get_linewidths()) <= 1.0
    return [t.get_text().replace("\n", " ") for t in labels]


def test_chart_labels_carry_n_and_source(warehouse):
    import matplotlib.pyplot as plt

    from alignment_pipeline.evaluation.report import benchmark_chart_figure

    _write(warehouse, "base", [1, 0, 1, 0, 1], scores=[6, 7, 5])
    _write(warehouse, "sft", [1, 1, 1, 0, 1], scores=[6, 8])
    fig = benchmark_chart_figure(warehouse)
    try:
        assert _chart_checks(fig) == ["HH (real, n=2-3)", "TruthfulQA MC1 (real, n=5)"]
        paper = [t.get_text() for ax in fig.axes[2:] for t in ax.get_xticklabels()]
        assert paper and all(t.endswith("(paper)") for t in paper)
    finally:
        plt.close(fig)


def test_the_overview_shows_every_model_inline_and_checks_by_partition(tmp_path, monkeypatch):
    from alignment_pipeline.defs.evaluation import benchmark_tables
    from alignment_pipeline.defs.resources import PipelineResource
    from alignment_pipeline.evaluation import results
    from alignment_pipeline.evaluation.results import EvalReport

    resource = PipelineResource(home=str(tmp_path / "home"))
    _write(resource.warehouse(), "base", [1, 0, 1, 0])

    def fake_evaluate(warehouse, *, checkpoint, kind, model_path, config, judge, reward_model_path=None, now=None):
        _write(warehouse, checkpoint, [1, 0, 1, 0])
        return EvalReport(checkpoint, kind, model_path, [], {}, None, datetime(2026, 1, 1), 1)

    monkeypatch.setattr(results, "evaluate_checkpoint", fake_evaluate)
    monkeypatch.setattr("alignment_pipeline.llm.models.resolve_model_path", lambda model, models_dir: "m")
    monkeypatch.setattr(PipelineResource, "backend", lambda self, spec: None)
    with dg.instance_for_test() as instance:
        result = dg.materialize([benchmark_tables], partition_key="base", instance=instance,
                                resources={"pipeline": resource})
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    table = metadata["all_models"]
    assert isinstance(table, dg.TableMetadataValue) and next(iter(metadata)) == "all_models"
    assert [c.name for c in table.schema.columns][:2] == ["model", "kind"]
    assert "TruthfulQA MC1 (real, n=4)" in [c.name for c in table.schema.columns]
    assert [r.data["model"] for r in table.records] == ["base"]
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {c.name for c in BENCHMARK_CHECKS}
    assert {e.partition for e in evaluations} == {"base"}
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in evaluations)


@pytest.mark.slow
def test_the_smoke_demo_chart_and_checks(smoke_demo, tmp_path):
    """On the home of the README's smoke demo: the chart rendered from its rows labels each benchmark with source
    and n, and every benchmark partition has its checks, warnings where its rows equal base's."""
    import matplotlib.pyplot as plt

    from alignment_pipeline.defs.resources import PipelineResource
    from alignment_pipeline.demo import home_instance
    from alignment_pipeline.evaluation.report import benchmark_chart_figure, benchmark_chart_png

    home, _env, done, _seconds = smoke_demo
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    pipeline = PipelineResource(home=str(home), profile="smoke")
    warehouse = pipeline.warehouse()
    fig = benchmark_chart_figure(warehouse)
    try:
        labels = _chart_checks(fig)
    finally:
        plt.close(fig)
    assert labels and all(" (real, n=" in label or " (proxy, n=" in label for label in labels), labels
    assert benchmark_chart_png(warehouse, tmp_path / "bench.png").stat().st_size > 10_000

    instance = home_instance(pipeline.layout())
    evaluations = [r.event_log_entry.dagster_event.event_specific_data
                   for r in instance.event_log_storage.get_event_records(
                       dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1000)
                   if r.event_log_entry.dagster_event.event_specific_data.asset_key == dg.AssetKey("benchmark_tables")]
    by_partition = {}
    for e in evaluations:
        by_partition.setdefault(e.partition, {})[e.check_name] = e
    assert set(by_partition) >= {"base", "sft"}
    assert all(set(checks) == {c.name for c in BENCHMARK_CHECKS} for checks in by_partition.values())
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in evaluations)
    assert not by_partition["base"]["enough_items"].passed  # the smoke profile evaluates a handful of items
