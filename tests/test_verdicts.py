"""Verdict sentences read from paired comparisons with base and with SFT, and the positive control's reading."""

from datetime import datetime

import pytest

from alignment_pipeline.evaluation.choice_eval import ItemResult
from alignment_pipeline.evaluation.metrics import MetricRow
from alignment_pipeline.evaluation.results import write_results
from alignment_pipeline.evaluation.stats import wilson
from alignment_pipeline.evaluation.verdicts import items_needed, verdict_lines
from alignment_pipeline.summary import benchmark_lines
from alignment_pipeline.warehouse.db import Warehouse

N = 200


def _write(warehouse: Warehouse, checkpoint: str, kind: str, correct: dict[str, list[bool]]) -> None:
    items = [ItemResult(task, "acc", f"{task}.csv", i, None, float(c), c)
             for task, flags in correct.items() for i, c in enumerate(flags)]
    rows = []
    for task, flags in correct.items():
        ci = wilson(sum(flags), len(flags))
        rows.append(MetricRow(task, "acc", ci.value, None, len(flags), "real", ci.low, ci.high, "wilson"))
    write_results(warehouse, checkpoint=checkpoint, kind=kind, model_path=f"/m/{checkpoint}", rows=rows,
                  hh_results=[], evaluated_at=datetime(2026, 1, 1), tasks=list(correct), items=items)


def _flags(right: int) -> list[bool]:
    return [i < right for i in range(N)]


@pytest.fixture
def warehouse(tmp_path):
    w = Warehouse(tmp_path / "w.duckdb")
    _write(w, "base", "base", {"truthfulqa_mc1": _flags(60), "ethics_cm": _flags(100)})
    _write(w, "sft", "baseline", {"truthfulqa_mc1": _flags(60), "ethics_cm": _flags(100)})
    # 40 more items right on TruthfulQA than base (and SFT), 30 fewer on ETHICS
    _write(w, "stage3_realignment", "stage3", {"truthfulqa_mc1": _flags(100), "ethics_cm": _flags(70)})
    return w


def test_each_checkpoint_gets_a_sentence_against_base_and_sft(warehouse):
    _write(warehouse, "control_sft", "reference", {"truthfulqa_mc1": _flags(61), "ethics_cm": _flags(100)})
    lines = verdict_lines(warehouse)
    stage = next(line for line in lines if line.startswith("stage3_realignment vs base"))
    assert "better on TruthfulQA MC1 (+0.200 [" in stage and "n=200" in stage
    assert "worse on ETHICS (-0.150 [" in stage
    assert "vs sft: better on TruthfulQA MC1" in stage  # SFT equals base here, so the same verdicts
    sft = next(line for line in lines if line.startswith("sft vs base"))
    assert "no detectable difference on ETHICS, TruthfulQA MC1" in sft and "vs sft" not in sft
    assert [line.split(" ")[0] for line in lines[:-1]] == ["stage3_realignment", "sft", "control_sft"]
    # the control moved nothing: the reading says the null results carry no weight, and how many items would
    control = lines[-1]
    assert control.startswith("Positive control:") and "moved no benchmark beyond its interval" in control
    assert "would have shown (80% power): TruthfulQA MC1 0." in control and "TruthfulQA MC1 about" in control
    assert "verdicts (paired 95% intervals" in "\n".join(benchmark_lines(warehouse))


def test_a_control_that_moved_says_the_instrument_sees_that_size(warehouse):
    _write(warehouse, "control_dpo", "reference", {"truthfulqa_mc1": _flags(90), "ethics_cm": _flags(100)})
    reading = verdict_lines(warehouse)[-1]
    assert reading.startswith("Positive control: control_dpo TruthfulQA MC1 +0.150")
    assert "can see a change of that size" in reading


def test_no_control_no_reading_and_nothing_before_any_checkpoint(tmp_path):
    w = Warehouse(tmp_path / "w.duckdb")
    assert verdict_lines(w) == []
    _write(w, "base", "base", {"ethics_cm": _flags(100)})
    _write(w, "dpo", "baseline", {"ethics_cm": _flags(100)})
    assert verdict_lines(w) == ["dpo vs base: no detectable difference on ETHICS."]


def test_smallest_detectable_change_agrees_with_items_needed():
    from alignment_pipeline.evaluation.verdicts import smallest_detectable

    delta = smallest_detectable(0.0, 200)  # the floor: only the flips a change implies
    assert 0.03 < delta < 0.045 and abs(items_needed(0.0, delta) - 200) <= 1
    assert smallest_detectable(0.4, 200) == pytest.approx(2.8016 * 0.4 / 200 ** 0.5, rel=1e-3)


def test_items_needed_never_assumes_less_spread_than_the_change_itself():
    # a change of 0.05 flips at least 5% of the items: sd >= sqrt(0.05 - 0.0025)
    assert items_needed(0.0) == items_needed(0.2179) > 140
    assert items_needed(0.3) > items_needed(0.25) > 150


def test_the_view_fills_each_column_from_the_task_and_headline_metric_columns_py_names(tmp_path):
    """evaluation/columns.py and sql/views/benchmark_table.sql name the same (task, metric) per column: every
    measured column shows its headline metric's value and never another metric of the same task."""
    from alignment_pipeline.evaluation.columns import MEASURED

    w = Warehouse(tmp_path / "w.duckdb")
    rows = []
    for i, c in enumerate(MEASURED):
        rows.append(MetricRow(c.task, c.metric, 0.1 + i / 100, None, 10, "real", 0.0, 1.0, "wilson"))
        rows.append(MetricRow(c.task, "other_metric", 0.9, None, 10, "real", 0.0, 1.0, "wilson"))
    write_results(w, checkpoint="base", kind="base", model_path="/m/base", rows=rows, hh_results=[],
                  evaluated_at=datetime(2026, 1, 1), tasks=[c.task for c in MEASURED], items=[])
    table = w.query("SELECT * FROM benchmark_table WHERE source = 'measured'").row(0, named=True)
    assert {c.name: table[c.name] for c in MEASURED} == {c.name: pytest.approx(0.1 + i / 100)
                                                         for i, c in enumerate(MEASURED)}
