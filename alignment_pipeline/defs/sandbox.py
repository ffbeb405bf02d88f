"""sandbox_transcripts and scored_revisions: the Back-Scatter society over one prompt batch, then observers."""

import tempfile
from pathlib import Path

import dagster as dg

from alignment_pipeline.checks import run_checks
from alignment_pipeline.defs.common import (
    RATING_SCALE,
    batch_asset,
    check_results,
    check_specs,
    plain_metadata,
    png_markdown,
)
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.sandbox.checks import SCORED_REVISION_CHECKS, TRANSCRIPT_CHECKS

# The library imports numpy, torch and sentence-transformers: imported inside the assets so that loading the
# definitions (UI, sensor ticks) stays fast.


@batch_asset(
    deps=["seed_prompts"], group_name="sandbox",
    check_specs=check_specs("sandbox_transcripts", TRANSCRIPT_CHECKS),
    description="Back-Scatter rounds of a grid of LLM agents with memory: drafts, neighbour feedback with 1-7 "
                "ratings, revisions. Resumes where a crashed run stopped.",
)
def sandbox_transcripts(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    from alignment_pipeline.sandbox.run import run_sandbox
    from alignment_pipeline.summary import sandbox_quality

    batch, config, warehouse = context.partition_key, pipeline.config().sandbox, pipeline.warehouse()
    report = run_sandbox(warehouse, batch, config, backend_for=pipeline.backend, progress=context.log.info)
    outcomes = run_checks(TRANSCRIPT_CHECKS, warehouse=warehouse, batch=batch, config=config)
    quality = sandbox_quality(warehouse, batch)
    shown = ("clean_share", "feedback_parsed_share", "neighbours_disagree_share")
    values = {**report.metadata(), **{k: quality[k] for k in shown}, **_preview(warehouse, batch)}
    return dg.MaterializeResult(
        metadata={"dagster/row_count": report.interactions, **plain_metadata(
            values, rename=_RENAME,
            first=("interactions", "mean_feedback_rating", *shown, "transcript_preview", "feedback_ratings",
                   "null_feedback_ratings"))},
        check_results=check_results(outcomes),
    )


_RENAME = {"mean_feedback_rating": f"mean_feedback_rating{RATING_SCALE}", "seconds": "wall_seconds",
           "alignment": f"alignment_change{RATING_SCALE}", "engagement": f"engagement_change{RATING_SCALE}",
           **{f"mean_{d}_{t}": f"mean_{d}_{t}{RATING_SCALE}" for d in ("alignment", "engagement")
              for t in ("before", "after")}}


def _preview(warehouse, batch: str) -> dict:
    """`transcript_preview`: three interactions as people read them (none without interactions)."""
    from alignment_pipeline.sandbox.preview import transcript_preview

    text = transcript_preview(warehouse, batch, n=3)
    return {"transcript_preview": dg.MetadataValue.md(text)} if text else {}


@batch_asset(
    deps=[sandbox_transcripts], group_name="sandbox",
    check_specs=check_specs("scored_revisions", SCORED_REVISION_CHECKS),
    description="Memoryless observers rate alignment and engagement (1-7) of each draft and revision.",
)
def scored_revisions(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    from alignment_pipeline.sandbox.report import rating_histogram_png
    from alignment_pipeline.sandbox.scoring import score_revisions
    from alignment_pipeline.summary import sandbox_quality

    batch, config, warehouse = context.partition_key, pipeline.config().sandbox, pipeline.warehouse()
    report = score_revisions(warehouse, batch, config, backend_for=pipeline.backend, progress=context.log.info)
    quality = sandbox_quality(warehouse, batch)
    with tempfile.TemporaryDirectory() as tmp:
        histogram = png_markdown(rating_histogram_png(warehouse, batch, Path(tmp) / "ratings.png"),
                                 "observer alignment before and after")
    # alignment and engagement: revision minus draft, paired over interactions, with a 95% t interval
    values = {**{k: quality[k] for k in ("alignment", "engagement", "observer_parsed_share")}, **report.metadata(),
              "rating_histogram": histogram, **_preview(warehouse, batch)}
    return dg.MaterializeResult(
        metadata={"dagster/row_count": warehouse.count("scored_revisions", "batch = ?", [batch]), **plain_metadata(
            values, rename=_RENAME,
            first=("alignment", "engagement", "share_improved", "mean_alignment_before", "mean_alignment_after",
                   "mean_engagement_before", "mean_engagement_after", "rating_histogram", "transcript_preview"))},
        check_results=check_results(run_checks(SCORED_REVISION_CHECKS, warehouse=warehouse, batch=batch)),
    )
