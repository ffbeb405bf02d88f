"""A new file in the prompt inbox becomes a partition and a run of its batch lineage."""

import dagster as dg

from alignment_pipeline.defs.jobs import batch_lineage_job
from alignment_pipeline.defs.partitions import prompt_batches
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.prompts.ingest import batch_key, list_inbox


@dg.sensor(job=batch_lineage_job, minimum_interval_seconds=30,
           description="A new file in the prompt inbox becomes a partition and a run of its batch lineage.")
def new_prompt_files(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
    known = set(context.instance.get_dynamic_partitions(prompt_batches.name))
    files = list_inbox(pipeline.inbox_dir(), pipeline.config().prompts.extensions)
    new_keys = sorted({batch_key(p) for p in files} - known)
    if not new_keys:
        return dg.SensorResult(skip_reason=f"no new files in {pipeline.inbox_dir()}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=f"batch:{k}") for k in new_keys],
        dynamic_partitions_requests=[prompt_batches.build_add_request(new_keys)],
    )
