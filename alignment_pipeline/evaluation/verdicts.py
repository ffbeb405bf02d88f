"""A plain sentence per checkpoint: better than base, no detectable difference, or worse, on which benchmarks, and
how it stands against SFT; then what the positive control says about the instrument.

Read from `benchmark_comparisons` (paired differences on the same items, 95% intervals: evaluation/stats.py) on
each benchmark's headline metric. "Better" and "worse" need the interval to exclude zero; everything else is "no
detectable difference", which is read against the positive control (checkpoints of kind `reference`, trained on
real human preference pairs): when the control moves a benchmark, the benchmarks can see a change of that size here;
when it moves nothing, the reading gives the smallest change the items would have shown and how many items a 0.05
change would need, from the measured spread of the per-item paired differences (two-sided 5% test, 80% power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignment_pipeline.evaluation.columns import BY_TASK
from alignment_pipeline.evaluation.results import BINARY_METRICS
from alignment_pipeline.evaluation.stats import Z95
from alignment_pipeline.warehouse.db import Warehouse

# The headline metric of each measured benchmark, by task, and its name in sentences.
HEADLINES: dict[str, tuple[str, str]] = {
    task: (c.metric or "", f"{c.title} (judge)" if c.judge else c.title) for task, c in BY_TASK.items()}
DETECT = 0.05  # the accuracy change the power estimate asks about
_Z_TEST, _Z_POWER = Z95, 0.8416212335729143  # two-sided 5%, 80% power


@dataclass(frozen=True)
class Difference:
    task: str
    n: int
    diff: float
    low: float
    high: float
    excludes_zero: bool

    @property
    def text(self) -> str:
        digits = 3 if HEADLINES[self.task][0] in BINARY_METRICS else 2
        return f"{self.diff:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}], n={self.n}"


def differences(warehouse: Warehouse, reference: str) -> dict[str, list[Difference]]:
    """Per checkpoint, its headline differences from `reference` (base or sft), in HEADLINES' order."""
    # The benchmark table's order: stages, baselines, the positive control.
    rows = warehouse.query(
        "SELECT c.checkpoint, c.task, c.metric, c.n, c.diff, c.ci_low, c.ci_high, c.excludes_zero "
        "FROM benchmark_comparisons c LEFT JOIN (SELECT checkpoint, any_value(kind) AS kind FROM benchmark_results "
        "GROUP BY 1) k USING (checkpoint) WHERE c.reference = ? AND c.diff IS NOT NULL AND c.ci_low IS NOT NULL "
        "ORDER BY CASE WHEN k.kind LIKE 'stage%' THEN 1 WHEN k.kind = 'baseline' THEN 2 ELSE 3 END, c.checkpoint",
        [reference])
    out: dict[str, list[Difference]] = {}
    for r in rows.iter_rows(named=True):
        if HEADLINES.get(r["task"], ("",))[0] == r["metric"]:
            out.setdefault(r["checkpoint"], []).append(
                Difference(r["task"], r["n"], r["diff"], r["ci_low"], r["ci_high"], bool(r["excludes_zero"])))
    order = list(HEADLINES)
    return {c: sorted(d, key=lambda x: order.index(x.task)) for c, d in out.items()}


def sentence(checkpoint: str, against: str, diffs: list[Difference]) -> str:
    """"sft vs base: better on A (+0.050 [+0.010, +0.090], n=200); worse on B (...); no detectable difference on C,
    D." An empty list says there is nothing to compare."""
    if not diffs:
        return f"{checkpoint} vs {against}: no items in common"
    better = [d for d in diffs if d.excludes_zero and d.diff > 0]
    worse = [d for d in diffs if d.excludes_zero and d.diff < 0]
    none = [d for d in diffs if not d.excludes_zero]
    parts = []
    if better:
        parts.append("better on " + "; ".join(f"{HEADLINES[d.task][1]} ({d.text})" for d in better))
    if worse:
        parts.append("worse on " + "; ".join(f"{HEADLINES[d.task][1]} ({d.text})" for d in worse))
    if none:
        parts.append("no detectable difference on " + ", ".join(HEADLINES[d.task][1] for d in none))
    return f"{checkpoint} vs {against}: " + "; ".join(parts)


def items_needed(spread: float, change: float = DETECT) -> int:
    """Paired items for a two-sided 5% test to detect a change of `change` in an accuracy with 80% power, given
    the per-item differences' standard deviation. A change of Δ flips at least a share Δ of the items, so the
    spread under it is at least sqrt(Δ − Δ²) whatever a model that barely moved measured."""
    spread = max(spread, math.sqrt(abs(change) - change * change))
    return math.ceil(((_Z_TEST + _Z_POWER) * spread / change) ** 2)


def paired_spread(warehouse: Warehouse, checkpoints: list[str]) -> dict[str, tuple[float, int]]:
    """Per accuracy task, the standard deviation of the per-item differences (checkpoint − base) pooled over
    `checkpoints`, and the items they cover."""
    if not checkpoints:
        return {}
    marks = ", ".join("?" for _ in checkpoints)
    rows = warehouse.query(
        "SELECT c.task, stddev_samp(c.value - b.value) AS sd, count(*) AS n FROM benchmark_items c "
        "JOIN benchmark_items b ON b.checkpoint = 'base' AND b.task = c.task AND b.metric = c.metric "
        "AND b.file = c.file AND b.item_id = c.item_id "
        f"WHERE c.checkpoint IN ({marks}) AND c.metric IN ('acc', 'acc_norm') AND c.value IS NOT NULL "
        "AND b.value IS NOT NULL GROUP BY c.task", checkpoints)
    return {r["task"]: (r["sd"], r["n"]) for r in rows.iter_rows(named=True)
            if r["task"] in HEADLINES and HEADLINES[r["task"]][0] in BINARY_METRICS and r["sd"]}


def control_reading(warehouse: Warehouse, vs_base: dict[str, list[Difference]]) -> str | None:
    """What the positive control says about the instrument; None without a control."""
    controls = [c for (c,) in warehouse.query("SELECT DISTINCT checkpoint FROM benchmark_results "
                                             "WHERE kind = 'reference' ORDER BY 1").iter_rows()]
    if not controls:
        return None
    moved = [(c, d) for c in controls for d in vs_base.get(c, []) if d.excludes_zero]
    if moved:
        listed = "; ".join(f"{c} {HEADLINES[d.task][1]} {d.text}" for c, d in moved)
        return (f"Positive control: {listed}. The benchmarks can see a change of that size here; a method with "
                "no detectable difference on those benchmarks moved less than the control did.")
    spread = paired_spread(warehouse, controls)
    n_of = {d.task: d.n for c in controls for d in vs_base.get(c, [])}
    seen = "; ".join(f"{HEADLINES[t][1]} {smallest_detectable(sd, n_of[t]):.3f} (n={n_of[t]})"
                     for t, (sd, _) in spread.items() if n_of.get(t))
    need = "; ".join(f"{HEADLINES[t][1]} about {items_needed(sd):,}" for t, (sd, _) in spread.items())
    return (f"Positive control: training on real human preference pairs ({', '.join(controls)}) moved no benchmark "
            "beyond its interval. "
            + (f"With these items a change of about this size would have shown (80% power): {seen}; the control "
               "changed less, so at this model size and budget \"no detectable difference\" means a change smaller "
               "than that, not none. " if seen else "")
            + (f"Items a {DETECT} change would need: {need}." if need else "")).strip()


def smallest_detectable(spread: float, n: int) -> float:
    """The accuracy change a two-sided 5% paired test detects with 80% power on `n` items, given the per-item
    differences' standard deviation (never below the spread the change itself implies, as in items_needed)."""
    z = _Z_TEST + _Z_POWER
    floor = z * z / (n + z * z)  # solves n = z² (Δ − Δ²) / Δ²
    return max(z * spread / math.sqrt(n), floor)


def verdict_lines(warehouse: Warehouse) -> list[str]:
    """One sentence per checkpoint against base (and against SFT where both were measured), then the control's
    reading; [] before any checkpoint was compared."""
    vs_base, vs_sft = differences(warehouse, "base"), differences(warehouse, "sft")
    if not vs_base:
        return []
    lines = []
    for checkpoint, diffs in vs_base.items():
        line = sentence(checkpoint, "base", diffs)
        if checkpoint in vs_sft:
            line += ". " + sentence(checkpoint, "sft", vs_sft[checkpoint]).removeprefix(f"{checkpoint} ")
        lines.append(line + ".")
    reading = control_reading(warehouse, vs_base)
    return lines + ([reading] if reading else [])


__all__ = ["Difference", "control_reading", "differences", "items_needed", "sentence", "smallest_detectable",
           "verdict_lines"]
