"""Partitions: one per prompt file (batches), one per model to benchmark."""

import dagster as dg

from alignment_pipeline.training.stages import MODELS

# One partition per prompt file in the inbox; the sensor adds them as files arrive.
prompt_batches = dg.DynamicPartitionsDefinition(name="prompt_batches")

# Benchmarks evaluate one model at a time, so a new checkpoint is evaluated alone.
checkpoint_partitions = dg.StaticPartitionsDefinition(list(MODELS))
