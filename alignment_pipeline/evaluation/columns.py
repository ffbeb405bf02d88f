"""The benchmarks of the paper-shaped table, in its order: the `benchmark_table` column each fills, its title, and
the task and headline metric behind it. The view (sql/views/benchmark_table.sql) selects the same (task, metric)
pairs; a test holds the two together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str  # column of the benchmark_table view
    title: str  # heading in the paper's table
    task: str | None  # the task measured into it; None: the paper's column, never measured here
    metric: str | None  # its headline metric
    judge: bool = False  # a judge's 1..10 score; the rest are accuracies in 0..1


COLUMNS: tuple[Column, ...] = (
    Column("hh", "HH", "hh", "score", judge=True),
    Column("hh_a", "HH-A", "hh_a", "score", judge=True),
    Column("moral_stories", "Moral Stories", "moral_stories", "acc"),
    Column("mic", "MIC", None, None),
    Column("ethics", "ETHICS", "ethics_cm", "acc"),
    Column("truthfulqa_mc1", "TruthfulQA MC1", "truthfulqa_mc1", "acc"),
    Column("hh_preference", "HH preference", "hh_preference", "acc_norm"),
)
MEASURED: tuple[Column, ...] = tuple(c for c in COLUMNS if c.task is not None)
#: task -> its column, for the measured ones
BY_TASK: dict[str, Column] = {c.task: c for c in MEASURED if c.task}
