"""Small shared pieces of the orchestration layer."""


from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from alignment_pipeline import images
from alignment_pipeline.checks import Check, CheckOutcome
from alignment_pipeline.defs.partitions import prompt_batches

# Every asset that writes DuckDB carries this tag (the executor runs one at a time: DuckDB allows a single
# writer process) and sits in this pool (serialises across runs when the instance sets a pool limit).
DUCKDB_TAG = {"alignment/duckdb": "writer"}
DUCKDB_POOL = "duckdb_writer"


def check_specs(asset: str, checks: Iterable[Check]) -> list[dg.AssetCheckSpec]:
    """Asset check specs for the domain's checks, each described by its function's docstring."""
    return [dg.AssetCheckSpec(c.name, asset=asset, blocking=c.blocking, description=c.description) for c in checks]


def check_results(outcomes: Iterable[CheckOutcome]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=o.name, passed=bool(o.passed), description=o.description,
            severity=dg.AssetCheckSeverity(o.severity),
            metadata={k: _plain(v) for k, v in o.metadata.items()},
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
    command = tracking.ui_command(home)
    if command:
        metadata["mlflow_ui"] = dg.MetadataValue.text(command)
    return metadata


def plain_metadata(values: dict) -> dict:
    return {k: _plain(v) for k, v in values.items()}


def _plain(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return dg.MetadataValue.json(value)
    if isinstance(value, (list, tuple)):
        return dg.MetadataValue.json(list(value))
    return str(value)

# Asset tags that the jobs select on.
BATCH_STAGE = {"alignment/stage": "batch"}
TRAINING_STAGE = {"alignment/stage": "training"}
BENCHMARK_STAGE = {"alignment/stage": "benchmarks"}


def batch_asset(**kwargs):
    """`dg.asset` for one prompt batch (partition) of the lineage that writes DuckDB."""
    return dg.asset(partitions_def=prompt_batches, kinds={"duckdb"}, tags=BATCH_STAGE, op_tags=DUCKDB_TAG,
                    pool=DUCKDB_POOL, **kwargs)
