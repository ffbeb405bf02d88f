"""One stage or baseline trained data-parallel (DDP, or FSDP: training.strategy) on this node's GPUs:

    torchrun --nproc_per_node N -m alignment_pipeline.training.launch --kind stage1_imitation

The pipeline config comes from --profile/--home/--settings, else $ALIGNMENT_PROFILE/$ALIGNMENT_HOME/
$ALIGNMENT_SETTINGS (what the Dagster resource passes on). Rank 0 alone opens the warehouse (DuckDB allows one
writer process): it reads the stage's samples and broadcasts them to the other ranks, and records the
`checkpoints` row after training. When Dagster started the command through Pipes, rank 0 also streams the
trainer's progress logs back and reports the asset materialization; the other ranks never open Pipes.
Effective batch = per_device_batch × grad_accum × N prompts per optimizer step.

The pipeline starts torchrun through training/guard.py and every trainer process calls `die_with_parent`, so
killing the step (or the demo running it) ends torchrun and its workers too; and a trainer refuses to start on an
output folder another live trainer holds (training/checkpointing.py: `claim_output_dir`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from alignment_pipeline import env

MODULE = "alignment_pipeline.training.launch"
GUARD = "alignment_pipeline.training.guard"
ENV_VARS = {"profile": env.PROFILE, "home": env.HOME, "settings_file": env.SETTINGS, "inbox": env.INBOX}


def launch_command(kind: str, *, nproc_per_node: int, base_model: str | None = None,
                   parent_checkpoint: str | None = None, parent_run_id: str | None = None,
                   dagster_run_id: str | None = None, master_port: int | None = None,
                   python: str | None = None) -> list[str]:
    """The torchrun command line that trains `kind` on `nproc_per_node` processes of this node; torchrun runs
    under the guard, so it dies with the process that started it."""
    command = [python or sys.executable, "-m", GUARD, "torch.distributed.run", "--nnodes", "1",
               "--nproc_per_node", str(nproc_per_node)]
    if master_port:
        command += ["--master_addr", "127.0.0.1", "--master_port", str(master_port)]
    else:
        command += ["--standalone"]  # a free local port, so two launches never collide
    command += ["-m", MODULE, "--kind", kind]
    for flag, value in (("--base-model", base_model), ("--parent-checkpoint", parent_checkpoint),
                        ("--parent-run-id", parent_run_id), ("--dagster-run-id", dagster_run_id)):
        if value:
            command += [flag, value]
    return command


def launch_env(*, profile: str | None = None, home: str | os.PathLike | None = None,
               settings_file: str | os.PathLike | None = None, inbox: str | os.PathLike | None = None
               ) -> dict[str, str]:
    """Environment variables that make the launched processes resolve the same config and home."""
    values = {"profile": profile, "home": home, "settings_file": settings_file, "inbox": inbox}
    env = {}
    for key, value in values.items():
        if value is None:
            continue
        env[ENV_VARS[key]] = str(value) if key == "profile" else str(Path(value).expanduser().resolve())
    return env


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"torchrun ... -m {MODULE}", description=__doc__.split("\n\n")[0])
    from alignment_pipeline.training.stages import CHECKPOINT_KINDS

    parser.add_argument("--kind", required=True, choices=CHECKPOINT_KINDS, help="the stage or baseline to train")
    parser.add_argument("--base-model", help="the model to start from (default: training.base_model)")
    parser.add_argument("--parent-checkpoint", help="name of the checkpoint the base model is (lineage)")
    parser.add_argument("--parent-run-id", help="MLflow run to nest the stage's run under")
    parser.add_argument("--dagster-run-id", help="tagged on the MLflow run")
    parser.add_argument("--profile", default=env.get(env.PROFILE))
    parser.add_argument("--home", default=env.get(env.HOME))
    parser.add_argument("--settings", default=env.get(env.SETTINGS))
    parser.add_argument("--no-resume", action="store_true", help="start afresh instead of resuming")
    return parser.parse_args(argv)


def _train(args: argparse.Namespace, config, home, runtime):
    from alignment_pipeline.tracking import run_tags
    from alignment_pipeline.training import distributed as dist_utils
    from alignment_pipeline.training.curriculum import spec_for, stage_groups, train_stage
    from alignment_pipeline.warehouse.db import Warehouse

    spec = spec_for(args.kind, config)
    warehouse = Warehouse(home.duckdb_path) if runtime.is_main else None
    groups = dist_utils.broadcast_object(stage_groups(warehouse, spec) if runtime.is_main else None, runtime)
    return train_stage(warehouse, spec, base_model=args.base_model or config.base_model,
                       parent_checkpoint=args.parent_checkpoint, config=config, home=home,
                       parent_run_id=args.parent_run_id, tags=run_tags(dagster_run_id=args.dagster_run_id),
                       resume=not args.no_resume, groups=groups)


def materialization_metadata(result, home, world_size: int) -> dict:
    """What rank 0 reports to Dagster: the same fields the in-process asset shows, plus the world size."""
    from alignment_pipeline.images import png_markdown
    from alignment_pipeline.tracking import run_url, ui_command

    metadata: dict = dict(result.metadata())
    metadata["world_size"] = world_size
    if result.mlflow_run_id:  # a link in the UI, as the in-process asset shows it (defs/common.py)
        metadata["mlflow_run"] = {"raw_value": run_url(home, result.mlflow_run_id), "type": "url"}
        if ui_command(home):
            metadata["mlflow_ui"] = ui_command(home)
    png = Path(result.loss_curve_png)
    if png.exists():
        metadata["loss_curve"] = {"raw_value": png_markdown(png, "loss"), "type": "md"}
    return metadata


class _PipesLogHandler(logging.Handler):
    """The trainer's log records, sent to Dagster as Pipes log messages."""

    def __init__(self, pipes):
        super().__init__(logging.INFO)
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            log = getattr(self.pipes.log, level if level in ("debug", "info", "warning", "error") else "info")
            log(self.format(record))
        except Exception:  # a logging failure must not stop training; logging reports it
            self.handleError(record)


def _under_pipes() -> bool:
    from dagster_pipes import PipesEnvVarParamsLoader

    return PipesEnvVarParamsLoader().is_dagster_pipes_process()


def main(argv: Sequence[str] | None = None) -> int:
    from alignment_pipeline.config import load_profile
    from alignment_pipeline.paths import HomeLayout
    from alignment_pipeline.training import distributed as dist_utils
    from alignment_pipeline.training.guard import die_with_parent
    from alignment_pipeline.training.runtime import resolve_runtime

    die_with_parent()  # a worker never outlives its torchrun
    args = _parse(argv)
    config = load_profile(args.profile, settings_file=args.settings).training
    home = HomeLayout(args.home)
    runtime = resolve_runtime(config.device, config.precision)
    created = dist_utils.init_process_group(runtime, timeout_s=config.distributed_timeout_s)
    try:
        if runtime.is_main and _under_pipes():
            from dagster_pipes import open_dagster_pipes

            with open_dagster_pipes() as pipes:
                pipes.log.info(f"training {args.kind} on {runtime.world_size} process(es), device {runtime.device}")
                trainer_log = logging.getLogger("alignment_pipeline.training")
                handler, level = _PipesLogHandler(pipes), trainer_log.level
                trainer_log.addHandler(handler)
                trainer_log.setLevel(logging.INFO)
                try:
                    result = _train(args, config, home, runtime)
                finally:
                    trainer_log.removeHandler(handler)
                    trainer_log.setLevel(level)
                pipes.report_asset_materialization(
                    metadata=materialization_metadata(result, home, runtime.world_size))
        else:
            result = _train(args, config, home, runtime)
            if runtime.is_main:
                print(json.dumps(result.metadata(), default=str))
    finally:
        if created:
            dist_utils.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
