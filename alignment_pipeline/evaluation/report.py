"""The benchmark table for people: markdown (Dagster metadata, README, CLI) and a bar chart PNG with 95% intervals.

A measured cell reads `value [low, high] n=N`, then, for a checkpoint other than base, `Δ diff [low, high]` against
base on the same items, marked `*` where that interval excludes zero. HH / HH-A say `self-judged` when the judge is
the evaluated model or its base. mic_proxy is not MIC: a note under the table, never a column of it."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from alignment_pipeline.evaluation.columns import COLUMNS as BENCHMARK_COLUMNS
from alignment_pipeline.evaluation.verdicts import verdict_lines
from alignment_pipeline.warehouse.db import Warehouse

# (column of the benchmark_table view, heading in the paper's table)
COLUMNS: tuple[tuple[str, str], ...] = tuple((c.name, c.title) for c in BENCHMARK_COLUMNS)
MEASURED_ONLY = ("hh_preference",)  # the paper has no such column
PAPER_ONLY = tuple(c.name for c in BENCHMARK_COLUMNS if c.task is None)  # the paper's MIC; never measured here
JUDGE_COLUMNS = tuple(c.name for c in BENCHMARK_COLUMNS if c.judge)  # 1..10; the rest are accuracies in 0..1
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
    verdicts = verdict_lines(warehouse)
    if verdicts:
        notes += ["", "**Verdicts** (paired 95% intervals on the same items; better or worse only where the interval "
                      "excludes 0):", "", *(f"- {_escape(v)}" for v in verdicts)]
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


def _measured_cell(row: dict, column: str, *, with_n: bool = True) -> str:
    value = row.get(column)
    if value is None:
        return _MISSING
    digits = _digits(column, "measured")
    text = f"{value:.{digits}f}"
    if row.get(f"{column}_low") is not None:
        text += f" [{row[f'{column}_low']:.{digits}f}, {row[f'{column}_high']:.{digits}f}]"
    if with_n:
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


# --- labels with n and data source ----------------------------------------------------------------------------

_SOURCES = """
SELECT task, string_agg(DISTINCT dataset_source, '+' ORDER BY dataset_source) AS source
FROM benchmark_results GROUP BY task
"""
#: the task behind a column of the benchmark_table view, where the names differ
_TASK_OF = {"ethics": "ethics_cm"}


def _n_text(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return f"n={low}" if low == high else f"n={low}-{high}"


def column_labels(warehouse: Warehouse) -> dict[str, str]:
    """Per benchmark column, its title with the data behind it (real, proxy, fixture) and its n over the measured
    models: "TruthfulQA MC1 (real, n=817)", a range where the models' n differ; "(not measured)" without rows."""
    sources = dict(warehouse.query(_SOURCES).iter_rows())
    measured = benchmark_frame(warehouse, include_paper=False)
    labels = {}
    for column, title in (*COLUMNS, ("mic_proxy", "MIC proxy")):
        known = f"{column}_n" in measured.columns  # the paper's MIC has no n
        counts = [n for n in measured[f"{column}_n"].to_list() if n is not None] if known else []
        source = sources.get(_TASK_OF.get(column, column))
        labels[column] = f"{title} ({source}, {_n_text(counts)})" if counts and source else f"{title} (not measured)"
    return labels


# --- the all-checkpoint table as records (Dagster shows a table value inline) ----------------------------------

def benchmark_records(warehouse: Warehouse) -> tuple[list[str], list[dict[str, str]]]:
    """(headings, rows) of the measured models: a heading per benchmark with its source and n (see
    `column_labels`), each cell its value [95% interval] and Δ from base [interval] (`*`: excludes 0); a cell
    names its n only where the models' n differ."""
    frame = benchmark_frame(warehouse, include_paper=False)
    labels = column_labels(warehouse)
    shown = [(c, labels[c]) for c, _ in COLUMNS if c not in PAPER_ONLY]
    single_n = {c: frame.height > 0 and frame[f"{c}_n"].drop_nulls().n_unique() <= 1 for c, _ in shown}
    headings = ["model", "kind", *(label for _, label in shown)]
    rows = [{"model": row["model"], "kind": row["kind"],
             **{label: _measured_cell(row, c, with_n=not single_n[c]) for c, label in shown}}
            for row in frame.iter_rows(named=True)]
    return headings, rows


# --- the chart ---------------------------------------------------------------------------------------------------

#: (columns, y label, limits) of a panel's two axes: judge scores on the left, accuracies on the right
_AXES = (
    (tuple(c for c in COLUMNS if c[0] in JUDGE_COLUMNS), "judge score (1-10)", (0, 10)),
    (tuple(c for c in COLUMNS if c[0] not in JUDGE_COLUMNS), "accuracy", (0, 1)),
)
_PAPER_HATCHES = ("", "///", "...", "xxx")
_PAPER_FACE = "#f0f0f0"


def benchmark_chart_png(warehouse: Warehouse, path: str | Path, *, include_paper: bool = True) -> Path:
    """`benchmark_chart_figure` saved as a PNG at most CHART_WIDTH_PX wide."""
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = benchmark_chart_figure(warehouse, include_paper=include_paper)
    fig.savefig(out, dpi=CHART_DPI)
    plt.close(fig)
    return out


def benchmark_chart_figure(warehouse: Warehouse, *, include_paper: bool = True):
    """The table as grouped bars, judge scores (1..10) left and accuracies (0..1) right: our models on top with
    thin 95% interval whiskers, every benchmark labelled with its data source and n; the paper's reported rows
    below in a grey panel of their own (reported values, no n or interval), never mixed with ours."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in worker processes
    import matplotlib.pyplot as plt

    frame = benchmark_frame(warehouse, include_paper=include_paper)
    measured = [r for r in frame.iter_rows(named=True) if r["source"] == "measured"]
    paper = [r for r in frame.iter_rows(named=True) if r["source"] == "paper"]
    labels = column_labels(warehouse)
    panels = [("measured", measured)] + ([("paper", paper)] if paper else [])
    # At most CHART_WIDTH_PX wide: Dagster's metadata dialog is 1280 px and cuts off anything wider.
    fig, axes = plt.subplots(len(panels), 2, figsize=(CHART_WIDTH_PX / CHART_DPI, 0.6 + 3.9 * len(panels)),
                             width_ratios=(1, 2.4), height_ratios=(4, 3)[:len(panels)], squeeze=False,
                             layout="constrained")
    for (which, rows), row_axes in zip(panels, axes, strict=True):
        handles = []
        for ax, (columns, ylabel, limits) in zip(row_axes, _AXES, strict=True):
            named = [(c, labels[c] if which == "measured" else f"{title} (paper)") for c, title in columns]
            shown = [(c, label) for c, label in named if any(r[c] is not None for r in rows)]
            # a benchmark run without a value (n=0: nothing scored) is named, not silently left out
            empty = [label for c, label in named if which == "measured" and (c, label) not in shown
                     and not label.endswith("(not measured)")]
            handles = _panel(ax, rows, shown, empty=empty, paper=which == "paper", ylabel=ylabel,
                             limits=limits) or handles
        if handles:  # one legend per panel, right of it, one entry per model
            row_axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                               frameon=False, title="reported in the paper" if which == "paper" else "measured here",
                               title_fontsize=7)
    axes[0][1].set_title("measured here: value, 95% interval (whiskers), data source and n per benchmark",
                         fontsize=9, loc="right")
    if paper:
        axes[1][1].set_title("reported in the paper (not measured here): no interval, no n", fontsize=9,
                             loc="right", color="dimgray")
    fig.suptitle("Benchmarks", fontsize=11)
    return fig


def _panel(ax, rows: list[dict], shown: list[tuple[str, str]], *, empty: list[str], paper: bool, ylabel: str,
           limits: tuple[float, float]) -> list:
    """One axis of grouped bars (one group per benchmark, one bar per model), the `empty` benchmarks named at
    its top; returns a legend handle per model (none when nothing is shown)."""
    import matplotlib.pyplot as plt

    ax.set_ylim(*limits)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    if paper:
        ax.set_facecolor(_PAPER_FACE)
    if empty:  # one per line: a narrow axis holds them
        ax.text(0.5, 0.97, "\n".join(["no values:", *empty]), ha="center", va="top", transform=ax.transAxes,
                fontsize=7, color="dimgray")
    if not rows or not shown:
        ax.set_xticks([])
        if not empty:
            ax.text(0.5, 0.5, "no results yet" if not rows else "not measured", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="dimgray")
        return []
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    width = 0.8 / len(rows)
    handles = []
    for m, row in enumerate(rows):
        xs = [i - 0.4 + width * (m + 0.5) for i in range(len(shown))]
        values = [row[c] if row[c] is not None else math.nan for c, _ in shown]
        style = ({"color": plt.get_cmap("Greys")(0.25 + 0.55 * m / max(len(rows) - 1, 1)),
                  "hatch": _PAPER_HATCHES[m % len(_PAPER_HATCHES)], "edgecolor": "dimgray"} if paper
                 else {"color": cmap(m % cmap.N), "edgecolor": "none"})
        handles.append(ax.bar(xs, values, width, linewidth=0.3, label=row["model"], **style))
        if not paper:  # thin whiskers: the intervals of neighbouring bars stay apart
            errors = [[_below(row, c) for c, _ in shown], [_above(row, c) for c, _ in shown]]
            ax.errorbar(xs, values, yerr=errors, fmt="none", ecolor="#333333", elinewidth=0.6, capsize=1.2,
                        capthick=0.6)
    ax.set_xticks(range(len(shown)), [_wrapped(label) for _, label in shown], fontsize=7)
    return handles


def _wrapped(label: str) -> str:
    """A label on two lines, the title then what is in parentheses: tick labels of neighbouring groups stay apart."""
    title, _, rest = label.partition(" (")
    return f"{title}\n({rest}" if rest else title


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
