"""seed_prompts: one prompt file of the inbox per partition, into the `prompts` table."""


import dagster as dg

from alignment_pipeline.checks import run_checks
from alignment_pipeline.defs.common import (
    batch_asset,
    check_results,
    check_specs,
    plain_metadata,
)
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.prompts.checks import SEED_PROMPT_CHECKS
from alignment_pipeline.prompts.ingest import (
    BATCH_PROMPTS_WHERE,
    PromptFileError,
    batch_key,
    ingest_file,
    legacy_batch_key,
    list_inbox,
)


@batch_asset(
    group_name="prompts",
    check_specs=check_specs("seed_prompts", SEED_PROMPT_CHECKS),
    description="Prompts of one inbox file, whitespace-normalised and deduplicated across batches; bad rows are "
                "quarantined in rejected_prompts with their line and reason.",
)
def seed_prompts(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    batch = context.partition_key
    inbox = pipeline.inbox_dir()
    listed = list_inbox(inbox, pipeline.config().prompts.extensions)
    files = [p for p in listed if batch_key(p) == batch]
    if not files:
        # A partition made before batch keys hashed the path: its key is the sanitised file name.
        files = [p for p in listed if legacy_batch_key(p) == batch]
        if len(files) > 1:
            raise dg.Failure(f"prompt batch {batch!r}: ambiguous, several inbox files have this old-style key: "
                             + ", ".join(p.name for p in files))
    if not files:
        raise dg.Failure(f"prompt batch {batch!r}: no such file in the inbox {inbox}")
    warehouse = pipeline.warehouse()
    try:
        report = ingest_file(warehouse, files[0], batch=batch, max_chars=pipeline.config().prompts.max_chars)
    except PromptFileError as exc:
        raise dg.Failure(str(exc)) from exc
    for rejection in report.rejected:
        context.log.warning(f"{report.source_file}:{rejection.line}: {rejection.reason}")
    outcomes = run_checks(SEED_PROMPT_CHECKS, warehouse=warehouse, batch=batch)
    total = warehouse.count("prompts", BATCH_PROMPTS_WHERE, [batch, batch])
    return dg.MaterializeResult(
        metadata={"dagster/row_count": total, **plain_metadata(report.metadata())},
        check_results=check_results(outcomes),
    )
