"""The reward model of the RLHF baseline: trained on the rated pairs, read by checkpoints/rlhf and the benchmarks."""

import dagster as dg

from alignment_pipeline.checks import run_checks
from alignment_pipeline.defs.common import (
    DUCKDB_POOL,
    DUCKDB_TAG,
    TRAINING_STAGE,
    check_results,
    check_specs,
    mlflow_run_metadata,
    plain_metadata,
)
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.training.checks import REWARD_MODEL_CHECKS


@dg.asset(
    deps=[dg.AssetKey("alignment_samples")], group_name="training", kinds={"pytorch", "mlflow", "duckdb"},
    tags=TRAINING_STAGE, op_tags=DUCKDB_TAG, pool=DUCKDB_POOL,
    check_specs=check_specs("reward_model", REWARD_MODEL_CHECKS),
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
        outcomes = run_checks(REWARD_MODEL_CHECKS, warehouse=warehouse, config=config, not_trained=str(exc))
        return dg.MaterializeResult(metadata={"not_trained": str(exc), "prompt_groups": len(groups)},
                                    check_results=check_results(outcomes))
    record_reward_model(warehouse, result, base_model=config.base_model)
    outcomes = run_checks(REWARD_MODEL_CHECKS, warehouse=warehouse, config=config)
    return dg.MaterializeResult(metadata={
        **reward_model_metadata(result.metadata()),
        **mlflow_run_metadata(home, result.mlflow_run_id),
    }, check_results=check_results(outcomes))


# What a reader looks for first: how well it ranks held-out pairs and on how many, then how it trained.
_KEY_FIGURES = ("heldout_accuracy", "heldout_pairs", "train_accuracy", "steps", "train_loss", "train_prompts",
                "heldout_prompts", "registered_model")


def reward_model_metadata(values: dict) -> dict:
    """The reward model's result as people read it: metrics without the `metric/` prefix, key figures first."""
    flat = {k.removeprefix("metric/"): v for k, v in values.items() if k != "mlflow_run_id"}
    return plain_metadata(flat, first=_KEY_FIGURES)
