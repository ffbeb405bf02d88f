"""One checkpoint asset per curriculum stage and per baseline, each a call to the contrastive trainer."""

import dagster as dg

from alignment_pipeline.defs.common import (
    DUCKDB_POOL,
    DUCKDB_TAG,
    TRAINING_STAGE,
    mlflow_run_metadata,
    plain_metadata,
    png_markdown,
)
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.training.stages import CHECKPOINTS, Checkpoint


def _checkpoint_asset(entry: Checkpoint) -> dg.AssetsDefinition:
    """Stages chain (each depends on its parent's checkpoint); baselines start from the base model."""
    kind = entry.kind
    deps = [dg.AssetKey("alignment_samples")] + ([dg.AssetKey(["checkpoints", entry.parent])] if entry.parent else [])
    if entry.online:  # optimises against the reward model (defs/reward.py)
        deps.append(dg.AssetKey("reward_model"))

    @dg.asset(
        name=kind, key_prefix="checkpoints", deps=deps, group_name="training",
        kinds={"pytorch", "mlflow"}, tags=TRAINING_STAGE, op_tags=DUCKDB_TAG, pool=DUCKDB_POOL,
        description=entry.description,
    )
    def _train(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        return train_checkpoint(context, pipeline, kind)

    return _train


def train_checkpoint(context: dg.AssetExecutionContext, pipeline: PipelineResource, kind: str) -> dg.MaterializeResult:
    from alignment_pipeline import tracking
    from alignment_pipeline.training.curriculum import (
        missing_data,
        pass_through,
        spec_for,
        stage_start,
        train_stage,
    )

    config, home, warehouse = pipeline.config().training, pipeline.layout(), pipeline.warehouse()
    spec = spec_for(kind, config)
    try:
        base = stage_start(warehouse, spec, config)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    why = missing_data(warehouse, spec, config)
    if why is not None:  # too little data is an outcome, not a crash: stated here, in the table and the summary
        note = pass_through(warehouse, spec, base, why=why, home=home)
        context.log.warning(f"{kind} not trained: {note}")
        return dg.MaterializeResult(metadata={"not_trained": note, "steps": 0})
    tags = tracking.run_tags(dagster_run_id=context.run_id)
    parent_run = tracking.parent_run(home, "curriculum", tags=tags)
    if config.nproc_per_node > 1 and not spec.online:  # online RL (TRL's RLOO) runs in this process
        return _train_with_torchrun(context, pipeline, kind, base=base, parent_checkpoint=spec.parent,
                                    parent_run=parent_run)
    result = train_stage(warehouse, spec, base_model=base, parent_checkpoint=spec.parent, config=config,
                         home=home, parent_run_id=parent_run, tags=tags)
    return dg.MaterializeResult(metadata={
        **plain_metadata(result.metadata()),
        "loss_curve": png_markdown(result.loss_curve_png, f"{kind} loss"),
        **mlflow_run_metadata(home, result.mlflow_run_id),
    })


def _train_with_torchrun(context: dg.AssetExecutionContext, pipeline: PipelineResource, kind: str, *, base: str,
                         parent_checkpoint: str | None, parent_run: str) -> dg.MaterializeResult:
    """More than one process configured: torchrun runs the trainer (DDP); rank 0 reports back through Pipes."""
    from alignment_pipeline.training.launch import launch_command, launch_env

    config = pipeline.config().training
    command = launch_command(kind, nproc_per_node=config.nproc_per_node, master_port=config.master_port,
                             base_model=base, parent_checkpoint=parent_checkpoint, parent_run_id=parent_run,
                             dagster_run_id=context.run_id)
    env = launch_env(profile=pipeline.config().profile, home=pipeline.layout().root, settings_file=pipeline.settings_file,
                     inbox=pipeline.inbox)
    return dg.PipesSubprocessClient().run(command=command, context=context, env=env).get_materialize_result()


checkpoint_assets = [_checkpoint_asset(entry) for entry in CHECKPOINTS]
