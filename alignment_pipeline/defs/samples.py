"""alignment_samples: imitation, self-critique and realignment samples of one batch, with blocking checks."""

import dagster as dg

from alignment_pipeline.checks import run_checks
from alignment_pipeline.defs.common import (
    batch_asset,
    check_results,
    check_specs,
    plain_metadata,
)
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.samples.checks import SAMPLE_CHECKS


@batch_asset(
    deps=["scored_revisions"], group_name="samples",
    check_specs=check_specs("alignment_samples", SAMPLE_CHECKS),
    description="(prompt, response, rating) samples of three kinds; rematerialising a batch replaces only its "
                "rows. Bad data fails a blocking check and stops training.",
)
def alignment_samples(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    from alignment_pipeline.samples.build import build_samples
    from alignment_pipeline.samples.config import SAMPLE_TYPES
    from alignment_pipeline.samples.preview import sample_preview

    batch, config, warehouse = context.partition_key, pipeline.config().samples, pipeline.warehouse()
    report = build_samples(warehouse, batch, config)
    preview = sample_preview(warehouse, batch)
    values = {**report.metadata(), **({"sample_preview": dg.MetadataValue.md(preview)} if preview else {})}
    first = ("samples", *(f"count_{t}" for t in SAMPLE_TYPES), "sample_preview", *(f"share_{t}" for t in SAMPLE_TYPES))
    return dg.MaterializeResult(
        metadata={"dagster/row_count": sum(report.counts.values()), **plain_metadata(values, first=first)},
        check_results=check_results(run_checks(SAMPLE_CHECKS, warehouse=warehouse, batch=batch, config=config)),
    )
