"""The jobs people launch: a prompt batch's lineage, training, benchmarks. Each selects its assets by stage tag."""

import dagster as dg

from alignment_pipeline.defs.common import BATCH_STAGE, BENCHMARK_STAGE, TRAINING_STAGE
from alignment_pipeline.defs.partitions import checkpoint_partitions, prompt_batches


def _tagged(stage: dict) -> dg.AssetSelection:
    ((key, value),) = stage.items()
    return dg.AssetSelection.tag(key, value)


batch_lineage_job = dg.define_asset_job(
    "batch_lineage", selection=_tagged(BATCH_STAGE), partitions_def=prompt_batches,
    description="One prompt batch from the inbox through the sandbox to alignment samples.",
)
training_job = dg.define_asset_job(
    "training", selection=_tagged(TRAINING_STAGE),
    description="Train every checkpoint (three stages and baselines) on all samples so far.",
)
benchmark_job = dg.define_asset_job(
    "benchmarks", selection=_tagged(BENCHMARK_STAGE), partitions_def=checkpoint_partitions,
    description="Evaluate one model (base, a stage or a baseline) into the benchmark tables.",
)
