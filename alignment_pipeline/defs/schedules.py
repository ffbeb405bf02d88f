"""Nightly reruns: training on everything ingested so far, then benchmarks of every model."""

import dagster as dg

from alignment_pipeline.defs.jobs import benchmark_job, training_job
from alignment_pipeline.training.stages import MODELS

nightly_training = dg.ScheduleDefinition(
    name="nightly_training", job=training_job, cron_schedule="0 1 * * *",
    description="Nightly: retrain every checkpoint on all samples ingested so far.",
)


@dg.schedule(job=benchmark_job, cron_schedule="0 4 * * *", name="nightly_benchmarks",
             description="Nightly, after training: refresh the benchmark table, one run per model.")
def nightly_benchmarks(context: dg.ScheduleEvaluationContext):
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    return [dg.RunRequest(partition_key=m, run_key=f"{stamp}:{m}") for m in MODELS]
