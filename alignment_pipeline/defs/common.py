"""Small shared pieces of the orchestration layer."""


import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dagster as dg

from alignment_pipeline import images
from alignment_pipeline.checks import Check, CheckOutcome
from alignment_pipeline.defs.partitions import prompt_batches

# Every asset that writes DuckDB carries this tag (the executor runs one at a time: DuckDB allows a single
# writer process) and sits in this pool (serialises across runs when the instance sets a pool limit).
DUCKDB_TAG = {"alignment/duckdb": "writer"}
DUCKDB_POOL = "duckdb_writer"


def check_specs(asset: str | dg.AssetKey, checks: Iterable[Check]) -> list[dg.AssetCheckSpec]:
    """Asset check specs for the domain's checks, each described by its function's docstring."""
    return [dg.AssetCheckSpec(c.name, asset=asset, blocking=c.blocking, description=c.description) for c in checks]


def partitioned_check_specs(specs: Iterable[dg.AssetCheckSpec], partitions_def: dg.PartitionsDefinition
                            ) -> list[dg.AssetCheckSpec]:
    """The specs checking one partition each, so that the UI ties every result to the batch it checked. (Set on
    the spec as it is, not through its constructor, which warns that partitioned checks are a preview.)"""
    return [spec._replace(partitions_def=partitions_def) for spec in specs]


def check_results(outcomes: Iterable[CheckOutcome]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=o.name, passed=bool(o.passed), description=o.description,
            severity=dg.AssetCheckSeverity(o.severity),
            metadata=plain_metadata(o.metadata),
        )
        for o in outcomes
    ]


def png_markdown(path: Path, title: str) -> dg.MetadataValue:
    """An image embedded in markdown metadata."""
    return dg.MetadataValue.md(images.png_markdown(path, title))


def mlflow_run_metadata(home, run_id: str | None) -> dict:
    """`mlflow_run`: a clickable link to the run's page (on the tracking server, else on the local `mlflow ui`,
    whose command comes along as `mlflow_ui`); nothing without a run."""
    from alignment_pipeline import tracking

    if not run_id:
        return {}
    metadata = {"mlflow_run": dg.MetadataValue.url(tracking.run_url(home, run_id))}
    runs = tracking.experiment_url(home)
    if runs:  # every stage's run side by side, unfolded from the grouping parent
        metadata["mlflow_training_runs"] = dg.MetadataValue.url(runs)
    command = tracking.ui_command(home)
    if command:
        metadata["mlflow_ui"] = dg.MetadataValue.text(command)
    return metadata


#: appended to the key of a rating on the sandbox's scale
RATING_SCALE = " (1-7)"


def plain_metadata(values: Mapping, *, first: Sequence[str] = (), rename: Mapping[str, str] | None = None) -> dict:
    """Metadata people can read: the `first` keys lead (the key figures), then the rest in their order; None values
    are left out (no null rows); numbers keep three significant digits (inside JSON too); a paired difference with
    its interval reads as one line; keys name their unit (`_s` becomes `_seconds`) and `rename` renames more
    (a rating's scale, say)."""
    rename = rename or {}
    order = [k for k in first if k in values] + [k for k in values if k not in first]
    out = {}
    for key in order:
        value = _plain(values[key])
        if value is not None:
            out[rename.get(key, unit_key(key))] = value
    return out


def unit_key(key: str) -> str:
    """`build_s` -> `build_seconds`, `tokens_per_s` -> `tokens_per_second`; other keys as they are."""
    if key.endswith("_per_s"):
        return f"{key[:-1]}second"
    if key.endswith("_s"):
        return f"{key[:-2]}_seconds"
    return key


def readable_number(value: float) -> float | int:
    """Three significant digits, never fewer than the integer part's (1234.5 -> 1234, 0.94444 -> 0.944)."""
    if not math.isfinite(value) or value == 0:
        return value
    digits = 2 - math.floor(math.log10(abs(value)))
    return round(value, digits) if digits > 0 else int(round(value))


def interval_text(values: Mapping) -> str | None:
    """A paired difference (`mean_diff`, `ci95_low`, `ci95_high`, `n`; summary.paired_difference) as
    "+0.50 (95% CI -0.12 to +1.12, n=8)"; None without pairs."""
    n, mean = values.get("n") or 0, values.get("mean_diff")
    if not n or mean is None:
        return None
    if values.get("ci95_low") is None or values.get("ci95_high") is None:
        return f"{mean:+.2f} (n={n}, too few pairs for an interval)"
    return f"{mean:+.2f} (95% CI {values['ci95_low']:+.2f} to {values['ci95_high']:+.2f}, n={n})"


def _is_interval(value) -> bool:
    return isinstance(value, Mapping) and {"mean_diff", "ci95_low", "ci95_high", "n"} <= set(value)


def _rounded(value):
    """Numbers rounded and None dropped, through nested dicts and lists (what JSON metadata shows)."""
    if isinstance(value, float):
        return readable_number(value)
    if _is_interval(value):
        return interval_text(value)
    if isinstance(value, Mapping):
        return {str(k): _rounded(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _plain(value):
    if isinstance(value, dg.MetadataValue):
        return value
    if isinstance(value, bool) or value is None:
        return value
    value = _rounded(value)
    if isinstance(value, (int, float, str)) or value is None:
        return value
    if isinstance(value, (dict, list)):  # an empty one is a null row too
        return dg.MetadataValue.json(value) if value else None
    return str(value)

# Asset tags that the jobs select on.
BATCH_STAGE = {"alignment/stage": "batch"}
TRAINING_STAGE = {"alignment/stage": "training"}
BENCHMARK_STAGE = {"alignment/stage": "benchmarks"}


def batch_asset(*, check_specs: Sequence[dg.AssetCheckSpec] = (), **kwargs):
    """`dg.asset` for one prompt batch (partition) of the lineage that writes DuckDB; its checks check that
    batch."""
    return dg.asset(partitions_def=prompt_batches, kinds={"duckdb"}, tags=BATCH_STAGE, op_tags=DUCKDB_TAG,
                    pool=DUCKDB_POOL, check_specs=partitioned_check_specs(check_specs, prompt_batches), **kwargs)
