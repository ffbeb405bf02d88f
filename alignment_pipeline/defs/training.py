"""One checkpoint asset per curriculum stage and per baseline, each a call to the contrastive trainer."""

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
    png_markdown,
)
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.training.checks import CHECKPOINT_CHECKS
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
        description=entry.description, check_specs=check_specs(dg.AssetKey(["checkpoints", kind]), CHECKPOINT_CHECKS),
    )
    def _train(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        return train_checkpoint(context, pipeline, kind)

    return _train


def train_checkpoint(context: dg.AssetExecutionContext, pipeline: PipelineResource, kind: str) -> dg.MaterializeResult:
    """Train (or record as not trained) the checkpoint, then say what ran, first, and check it from its
    `checkpoints` row (every path, torchrun's included, has written it by then)."""
    from alignment_pipeline.training.checks import what_ran
    from alignment_pipeline.training.lineage import checkpoint_row

    result = _materialize_checkpoint(context, pipeline, kind)
    warehouse = pipeline.warehouse()
    outcomes = run_checks(CHECKPOINT_CHECKS, warehouse=warehouse, checkpoint=kind)
    return result._replace(
        metadata={"ran": what_ran(checkpoint_row(warehouse, kind)), **(result.metadata or {})},
        check_results=[*(result.check_results or []), *check_results(outcomes)])


def _materialize_checkpoint(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                            kind: str) -> dg.MaterializeResult:
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
        **checkpoint_metadata(result.metadata()),
        "loss_curve": png_markdown(result.loss_curve_png, f"{kind} loss"),
        **mlflow_run_metadata(home, result.mlflow_run_id),
    })


# The figures a reader looks for first; the rest follow in the trainer's order.
_KEY_FIGURES = ("steps", "loss", "loss_last10", "sft", "hinge", "hinge_fired_steps", "active_margin_share",
                "groups", "groups_multi_response_share", "groups_ranked_share", "reward_accuracy", "train_seconds")


def checkpoint_metadata(values: dict) -> dict:
    """A trained checkpoint's result as people read it: its metrics without the `metric/` prefix, key figures
    first; the run id and the curve's file left out (the run is a link, the curve an image)."""
    flat = {k.removeprefix("metric/"): v for k, v in values.items()
            if k not in ("mlflow_run_id", "loss_curve_png")}
    return plain_metadata(flat, first=_KEY_FIGURES)


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
