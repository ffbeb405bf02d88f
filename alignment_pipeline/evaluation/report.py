"""The benchmark table for people: markdown (Dagster metadata, README, CLI) and a bar chart PNG."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from alignment_pipeline.warehouse.db import Warehouse

# (column of the benchmark_table view, heading in the paper's table)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("hh", "HH"), ("hh_a", "HH-A"), ("moral_stories", "Moral Stories"), ("mic", "MIC"), ("ethics", "ETHICS"),
    ("truthfulqa_mc1", "TruthfulQA MC1"),
)
JUDGE_COLUMNS = ("hh", "hh_a")  # 1..10; the rest are accuracies in 0..1
CHART_WIDTH_PX, CHART_DPI = 1100, 110

_ORDERED = """
SELECT * FROM benchmark_table
WHERE {where}
ORDER BY source = 'paper', paper_order,
    CASE WHEN kind = 'base' THEN 0 WHEN kind LIKE 'stage%' THEN 1 WHEN kind = 'baseline' THEN 2 ELSE 3 END,
    model
"""


def benchmark_frame(warehouse: Warehouse, *, include_paper: bool = True) -> pl.DataFrame:
    """The benchmark_table view, our checkpoints first, then (optionally) the paper's reported rows."""
    return warehouse.query(_ORDERED.format(where="TRUE" if include_paper else "source = 'measured'"))


def benchmark_markdown(warehouse: Warehouse, *, include_paper: bool = True) -> str:
    """The pivot as a markdown table shaped like the paper's: measured values as `value ± stderr`, the
    paper's rows marked `paper`, the data behind our rows (real, fixture or both) in the last column. When
    measured rows show the same value on every benchmark, a warning line comes first (see
    `identical_measured_rows`)."""
    frame = benchmark_frame(warehouse, include_paper=include_paper)
    head = ["model", "kind", "source", *(title for _, title in COLUMNS), "data"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in frame.iter_rows(named=True):
        cells = [_escape(row["model"]), row["kind"], row["source"]]
        for column, _ in COLUMNS:
            cells.append(_cell(row[column], row[f"{column}_stderr"], digits=_digits(column, row["source"])))
        cells.append(row["datasets"] or "")
        lines.append("| " + " | ".join(cells) + " |")
    if frame.height == 0:
        lines.append("| (no results yet) |" + " |" * (len(head) - 1))
    warnings = [identical_warning(group) for group in _identical(frame)]
    return "".join(f"{w}\n\n" for w in warnings) + "\n".join(lines) + "\n"


def identical_measured_rows(warehouse: Warehouse) -> list[list[str]]:
    """Groups (two or more models each) of measured rows that show the same value on every benchmark column,
    as the table prints them. Usually the models cannot be told apart by this evaluation (random-init or
    barely trained weights, too few items): differences between them are not to be read into."""
    return _identical(benchmark_frame(warehouse, include_paper=False))


def identical_warning(models: list[str]) -> str:
    return (f"> **Warning:** {', '.join(_escape(m) for m in models)} have identical results on every benchmark: "
            "this evaluation does not tell them apart (random-init or barely trained models, or too few "
            "items); their differences below are not measured ones.")


def _identical(frame: pl.DataFrame) -> list[list[str]]:
    groups: dict[tuple, list[str]] = {}
    for row in frame.iter_rows(named=True):
        if row["source"] != "measured":
            continue
        shown = tuple(_cell(row[c], None, digits=_digits(c, "measured")) for c, _ in COLUMNS)
        if any(v != _MISSING for v in shown):
            groups.setdefault(shown, []).append(row["model"])
    return [models for models in groups.values() if len(models) > 1]


def _digits(column: str, source: str) -> int:
    return 2 if column in JUDGE_COLUMNS or source == "paper" else 3


def benchmark_chart_png(warehouse: Warehouse, path: str | Path, *, include_paper: bool = True) -> Path:
    """A grouped bar chart of the table: judge scores (1..10) on the left, accuracies (0..1) on the right,
    one bar per model; the paper's reported rows are hatched."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in worker processes
    import matplotlib.pyplot as plt

    frame = benchmark_frame(warehouse, include_paper=include_paper)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    groups = (
        ([c for c in COLUMNS if c[0] in JUDGE_COLUMNS], "judge score (1-10)", (0, 10)),
        ([c for c in COLUMNS if c[0] not in JUDGE_COLUMNS], "accuracy", (0, 1)),
    )
    models = frame.to_dicts()
    # At most CHART_WIDTH_PX wide: Dagster's metadata dialog is 1280 px and cuts off anything wider.
    fig, axes = plt.subplots(1, 2, figsize=(CHART_WIDTH_PX / CHART_DPI, 5.5), gridspec_kw={"width_ratios": [1, 2]})
    cmap = plt.get_cmap("tab20")
    width = 0.8 / max(len(models), 1)
    for ax, (columns, label, limits) in zip(axes, groups, strict=True):
        for m, row in enumerate(models):
            xs = [i - 0.4 + width * (m + 0.5) for i in range(len(columns))]
            values = [row[c] if row[c] is not None else math.nan for c, _ in columns]
            errors = [row[f"{c}_stderr"] or 0.0 for c, _ in columns]
            ax.bar(xs, values, width, yerr=errors, color=cmap(m % 20),
                   hatch="//" if row["source"] == "paper" else None, edgecolor="black", linewidth=0.3,
                   label=f"{row['model']} ({row['source']})" if ax is axes[0] else None)
        ax.set_xticks(range(len(columns)), [title for _, title in columns])
        ax.set_ylim(*limits)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    if not models:
        axes[1].text(0.5, 0.5, "no results yet", ha="center", va="center", transform=axes[1].transAxes)
    else:
        fig.legend(loc="lower center", ncol=min(4, len(models)), fontsize=7, frameon=False)
    fig.suptitle("Benchmarks (hatched: reported in the paper)")
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(models) / 4), 1, 0.95))
    fig.savefig(out, dpi=CHART_DPI)
    plt.close(fig)
    return out


_MISSING = "–"


def _cell(value: float | None, stderr: float | None, *, digits: int) -> str:
    if value is None:
        return _MISSING
    text = f"{value:.{digits}f}"
    if stderr is not None:
        text += f" ± {stderr:.{digits}f}"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
