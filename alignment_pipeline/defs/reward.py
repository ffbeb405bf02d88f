"""The reward model of the RLHF baseline: trained on the rated pairs, read by checkpoints/rlhf and the benchmarks."""

import dagster as dg

from alignment_pipeline.defs.common import (
    DUCKDB_POOL,
    DUCKDB_TAG,
    TRAINING_STAGE,
    mlflow_run_metadata,
    plain_metadata,
)
from alignment_pipeline.defs.resources import PipelineResource


@dg.asset(
    deps=[dg.AssetKey("alignment_samples")], group_name="training", kinds={"pytorch", "mlflow", "duckdb"},
    tags=TRAINING_STAGE, op_tags=DUCKDB_TAG, pool=DUCKDB_POOL,
    description="Reward model (Bradley–Terry, length-balanced pairs, zero-mean score penalty) on the preference "
                "pairs DPO uses, with held-out pair accuracy and length bias; the RLHF baseline optimises against it.",
)
def reward_model(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    from alignment_pipeline import tracking
    from alignment_pipeline.training.curriculum import spec_for, stage_groups
    from alignment_pipeline.training.reward_model import (
        NotEnoughData,
        forget_reward_model,
        record_reward_model,
        train_reward_model,
    )

    config, home, warehouse = pipeline.config().training, pipeline.layout(), pipeline.warehouse()
    groups = stage_groups(warehouse, spec_for("rlhf", config))
    tags = tracking.run_tags(dagster_run_id=context.run_id)
    parent_run = tracking.parent_run(home, "curriculum", tags=tags)
    try:
        result = train_reward_model(groups, config=config, home=home, tags=tags, parent_run_id=parent_run)
    except NotEnoughData as exc:
        # Too little data is an outcome, not a crash: recorded as not trained, and checkpoints/rlhf follows.
        forget_reward_model(warehouse)
        context.log.warning(f"reward model not trained: {exc}")
        return dg.MaterializeResult(metadata={"not_trained": str(exc), "prompt_groups": len(groups)})
    record_reward_model(warehouse, result, base_model=config.base_model)
    return dg.MaterializeResult(metadata={
        **plain_metadata(result.metadata()),
        **mlflow_run_metadata(home, result.mlflow_run_id),
    })
