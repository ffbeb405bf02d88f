"""Checks of one model's benchmark rows as CheckOutcome values. They warn where the numbers cannot carry a claim:
rows identical to the base model's, benchmarks on too few items, no difference from base beyond its 95% interval.
None of them fails: the numbers stay in the table, flagged."""

from __future__ import annotations

from alignment_pipeline.checks import Check, CheckOutcome
from alignment_pipeline.evaluation.columns import MEASURED as MEASURED_COLUMNS
from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.evaluation.report import benchmark_frame
from alignment_pipeline.warehouse.db import Warehouse

#: (column of the benchmark_table view, title) of the benchmarks measured here
MEASURED = tuple((c.name, c.title) for c in MEASURED_COLUMNS)
#: values this close are the same number (accuracies and mean scores on the same items)
SAME = 1e-9


def _warn(passed: bool, description: str, metadata: dict) -> CheckOutcome:
    """Every outcome here is of WARN severity, passed or not: they flag numbers to read with care, never a data
    error."""
    return CheckOutcome(passed=passed, severity="WARN", description=description, metadata=metadata)


def _measured_row(warehouse: Warehouse, model: str) -> dict | None:
    frame = benchmark_frame(warehouse, include_paper=False)
    rows = [r for r in frame.iter_rows(named=True) if r["model"] == model]
    return rows[0] if rows else None


def _not_applicable(checkpoint: str, why: str) -> CheckOutcome:
    return _warn(True, f"not applicable: {why}", {"checkpoint": checkpoint, "applicable": False})


def _against_base(warehouse: Warehouse, checkpoint: str) -> tuple[dict | None, CheckOutcome | None]:
    """The checkpoint's measured row, or the not-applicable outcome of a comparison with base."""
    if checkpoint == "base":
        return None, _not_applicable(checkpoint, "this is the base model")
    row = _measured_row(warehouse, checkpoint)
    if row is None:
        return None, _not_applicable(checkpoint, f"{checkpoint} has no benchmark rows")
    return row, None


def check_differs_from_base(warehouse: Warehouse, checkpoint: str) -> CheckOutcome:
    """The model's benchmark values differ from the base model's on at least one task. The same values on every
    task both have mean the evaluation cannot tell the two apart (untrained or barely trained weights, too few
    items): a warning."""
    row, skipped = _against_base(warehouse, checkpoint)
    if skipped:
        return skipped
    base = _measured_row(warehouse, "base")
    shared = [(c, t) for c, t in MEASURED if row[c] is not None and base is not None and base[c] is not None]
    if not shared:
        return _not_applicable(checkpoint, "no task measured on both it and base")
    same = [t for c, t in shared if abs(row[c] - base[c]) <= SAME]
    metadata = {"checkpoint": checkpoint, "tasks": len(shared), "identical_tasks": same}
    if len(same) == len(shared):
        return _warn(False, f"identical to base on every task ({', '.join(same)}): this evaluation does not tell "
                            "it from its starting point", metadata)
    return _warn(True, f"differs from base on {len(shared) - len(same)} of {len(shared)} tasks", metadata)


def check_enough_items(warehouse: Warehouse, checkpoint: str, config: EvaluationConfig) -> CheckOutcome:
    """Every benchmark of the model rests on at least `evaluation.min_items_for_claims` items. On fewer, its 95%
    interval is too wide for its number to carry a claim: a warning naming those benchmarks and their n."""
    bar = config.min_items_for_claims
    row = _measured_row(warehouse, checkpoint)
    counts = {t: row[f"{c}_n"] for c, t in MEASURED if row is not None and row[f"{c}_n"] is not None}
    if not counts:
        return _warn(False, f"not evaluated: {checkpoint} has no benchmark rows",
                     {"checkpoint": checkpoint, "min_items_for_claims": bar})
    few = {t: n for t, n in counts.items() if n < bar}
    metadata = {"checkpoint": checkpoint, "min_items_for_claims": bar, "items": counts}
    if few:
        return _warn(False, f"fewer than {bar} items: " + ", ".join(f"{t} n={n}" for t, n in few.items()), metadata)
    return _warn(True, f"every benchmark on at least {bar} items (fewest {min(counts.values())})", metadata)


def _difference_text(row: dict, column: str) -> str:
    text = f"{row[f'{column}_diff']:+.3f}"
    if row.get(f"{column}_diff_low") is not None:
        text += f" [{row[f'{column}_diff_low']:+.3f}, {row[f'{column}_diff_high']:+.3f}]"
    return text + f" n={row[f'{column}_n']}"


def check_detectable_difference(warehouse: Warehouse, checkpoint: str) -> CheckOutcome:
    """The model differs detectably from the base model on at least one task: the 95% interval of its paired
    difference from base excludes zero. Where every interval includes zero, no difference is detectable (the
    table's differences are within noise): a warning, never a failure."""
    row, skipped = _against_base(warehouse, checkpoint)
    if skipped:
        return skipped
    compared = [(c, t) for c, t in MEASURED if row[f"{c}_diff"] is not None]
    if not compared:
        return _not_applicable(checkpoint, "no paired comparison with base on shared items")
    detectable = [t for c, t in compared if row[f"{c}_sig"]]
    metadata = {"checkpoint": checkpoint, "differences_vs_base": {t: _difference_text(row, c) for c, t in compared}}
    if detectable:
        return _warn(True, f"detectable difference from base on {', '.join(detectable)} (95% interval excludes 0)",
                     metadata)
    return _warn(False, f"no detectable difference from base on any of {len(compared)} tasks: every 95% interval "
                        "of the difference includes 0", metadata)


BENCHMARK_CHECKS: tuple[Check, ...] = (
    Check("differs_from_base", check_differs_from_base),
    Check("enough_items", check_enough_items),
    Check("detectable_difference", check_detectable_difference),
)
