"""alignment_samples: imitation, self-critique and realignment samples of one batch, with blocking checks."""

import dagster as dg

from alignment_pipeline.defs.common import (
    batch_asset,
    check_results,
    check_specs,
    plain_metadata,
)
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.samples import checks as sample_checks


@batch_asset(
    deps=["scored_revisions"], group_name="samples",
    check_specs=[*check_specs("alignment_samples", {
                     "samples_rating_in_range": sample_checks.check_rating_in_range,
                     "samples_nonempty_response": sample_checks.check_nonempty_response,
                     "samples_unique_id": sample_checks.check_unique_id,
                     "samples_traceable": sample_checks.check_traceable}, blocking=True),
                 *check_specs("alignment_samples", {"samples_type_shares": sample_checks.check_type_shares})],
    description="(prompt, response, rating) samples of three kinds; rematerialising a batch replaces only its "
                "rows. Bad data fails a blocking check and stops training.",
)
def alignment_samples(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    from alignment_pipeline.samples.build import build_samples
    from alignment_pipeline.samples.checks import all_checks

    batch, config, warehouse = context.partition_key, pipeline.config().samples, pipeline.warehouse()
    report = build_samples(warehouse, batch, config)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": sum(report.counts.values()), **plain_metadata(report.metadata())},
        check_results=check_results(all_checks(warehouse, batch, config)),
    )
