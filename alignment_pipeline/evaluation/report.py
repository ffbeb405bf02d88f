"""The benchmark table for people: markdown (Dagster metadata, README, CLI) and a bar chart PNG with 95% intervals.

A measured cell reads `value [low, high] n=N`, then, for a checkpoint other than base, `Δ diff [low, high]` against
base on the same items, marked `*` where that interval excludes zero. HH / HH-A say `self-judged` when the judge is
the evaluated model or its base. mic_proxy is not MIC: a note under the table, never a column of it."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from alignment_pipeline.warehouse.db import Warehouse

# (column of the benchmark_table view, heading in the paper's table)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("hh", "HH"), ("hh_a", "HH-A"), ("moral_stories", "Moral Stories"), ("mic", "MIC"), ("ethics", "ETHICS"),
    ("truthfulqa_mc1", "TruthfulQA MC1"), ("hh_preference", "HH preference"),
)
MEASURED_ONLY = ("hh_preference",)  # the paper has no such column
PAPER_ONLY = ("mic",)  # the paper's MIC; never measured here
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
    """The pivot as a markdown table shaped like the paper's: measured cells with n, interval and Δ (above), the
    paper's rows marked `paper`, the data behind our rows (real, proxy) in the last column. When
    measured rows show the same value on every benchmark, a warning line comes first (see
    `identical_measured_rows`)."""
    frame = benchmark_frame(warehouse, include_paper=include_paper)
    head = ["model", "kind", "source", *(title for _, title in COLUMNS), "data"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in frame.iter_rows(named=True):
        cells = [_escape(row["model"]), row["kind"], row["source"]]
        for column, _ in COLUMNS:
            cells.append(_measured_cell(row, column) if row["source"] == "measured"
                         else _cell(row[column], None, digits=_digits(column, row["source"])))
        cells.append(row["datasets"] or "")
        lines.append("| " + " | ".join(cells) + " |")
    if frame.height == 0:
        lines.append("| (no results yet) |" + " |" * (len(head) - 1))
    warnings = [identical_warning(group) for group in _identical(frame)]
    proxy = [f"{_escape(r['model'])} {_measured_cell(r, 'mic_proxy')}" for r in frame.iter_rows(named=True)
             if r["source"] == "measured" and r["mic_proxy"] is not None]
    notes = ["", "MIC proxy (hand-written items, **not MIC**; in no headline): " + "; ".join(proxy)] if proxy else []
    wins = warehouse.query("SELECT model, task, value, ci_low, ci_high, n, self_judged FROM benchmark_cells "
                           "WHERE metric = 'win_rate' ORDER BY model, task")
    if wins.height:
        notes += ["", "Win rate against base's answer (judge asked in both orders, ties and split verdicts ½; 95% "
                      "bootstrap interval): " + "; ".join(
                          f"{_escape(r['model'])} {r['task']} {r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] "
                          f"n={r['n']}" + (" (self-judged)" if r["self_judged"] else "")
                          for r in wins.iter_rows(named=True) if r["value"] is not None)]
    return "".join(f"{w}\n\n" for w in warnings) + "\n".join(lines + notes) + "\n"


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


def _measured_cell(row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:
        return _MISSING
    digits = _digits(column, "measured")
    text = f"{value:.{digits}f}"
    if row.get(f"{column}_low") is not None:
        text += f" [{row[f'{column}_low']:.{digits}f}, {row[f'{column}_high']:.{digits}f}]"
    text += f" n={row.get(f'{column}_n')}"
    if row.get(f"{column}_diff") is not None and row["kind"] != "base":
        text += f"; Δ {row[f'{column}_diff']:+.{digits}f}"
        if row.get(f"{column}_diff_low") is not None:
            text += f" [{row[f'{column}_diff_low']:+.{digits}f}, {row[f'{column}_diff_high']:+.{digits}f}]"
        if row.get(f"{column}_sig"):
            text += "*"
    if column in JUDGE_COLUMNS and row.get("self_judged"):
        text += " (self-judged)"
    return text


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
            errors = [[_below(row, c) for c, _ in columns], [_above(row, c) for c, _ in columns]]
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
    fig.suptitle("Benchmarks with 95% intervals (hatched: reported in the paper)")
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(models) / 4), 1, 0.95))
    fig.savefig(out, dpi=CHART_DPI)
    plt.close(fig)
    return out


_MISSING = "–"


def _below(row: dict, column: str) -> float:
    low = row.get(f"{column}_low")
    return row[column] - low if low is not None and row[column] is not None else 0.0


def _above(row: dict, column: str) -> float:
    high = row.get(f"{column}_high")
    return high - row[column] if high is not None and row[column] is not None else 0.0


def _cell(value: float | None, stderr: float | None, *, digits: int) -> str:
    if value is None:
        return _MISSING
    text = f"{value:.{digits}f}"
    if stderr is not None:
        text += f" ± {stderr:.{digits}f}"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
