"""The paper's three-stage curriculum and the baselines trained from the same base model and data.

Stage 1: imitation samples + Stable Alignment loss, from the base model.
Stage 2: self-critique samples + SFT (every neighbour's feedback is a target), from stage 1.
Stage 3: realignment samples + Stable Alignment loss, from stage 2.
Baselines, each from the base model:
- sft: the best-rated response of every group (all sample types, or imitation only: `sft_baseline_source`);
- dpo: (chosen, rejected) pairs, chosen rated strictly higher, from `preference_baseline_types` groups;
- sppo: the same groups with win-rates from the ratings; the reference is the base model (iteration 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup, load_groups
from alignment_pipeline.training.distributed import is_main_process
from alignment_pipeline.training.lineage import checkpoint_row, record_checkpoint
from alignment_pipeline.training.objectives import best_response_groups, training_groups
from alignment_pipeline.training.trainer import TrainResult, train
from alignment_pipeline.warehouse.db import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    kind: str  # checkpoint kind (and default checkpoint name)
    objective: str
    sample_types: tuple[str, ...] | None  # None: every type
    parent: str | None  # kind whose checkpoint this one starts from; None: the base model
    best_only: bool = False  # SFT baseline: each group reduced to its best response


STAGES: tuple[StageSpec, ...] = (
    StageSpec("stage1_imitation", "stable_alignment", ("imitation",), None),
    StageSpec("stage2_self_critique", "sft", ("self_critique",), "stage1_imitation"),
    StageSpec("stage3_realignment", "stable_alignment", ("realignment",), "stage2_self_critique"),
)


def baseline_specs(config: TrainingConfig) -> tuple[StageSpec, ...]:
    sft_types = None if config.sft_baseline_source == "all" else ("imitation",)
    pref = tuple(config.preference_baseline_types)
    return (StageSpec("sft", "sft", sft_types, None, best_only=True),
            StageSpec("dpo", "dpo", pref, None),
            StageSpec("sppo", "sppo", pref, None))


def spec_for(kind: str, config: TrainingConfig) -> StageSpec:
    for spec in STAGES + baseline_specs(config):
        if spec.kind == kind:
            return spec
    raise ValueError(f"unknown stage/baseline {kind!r}")


def stage_groups(warehouse: Warehouse, spec: StageSpec) -> list[PromptGroup]:
    """The training groups of a stage or baseline, read from alignment_samples."""
    if spec.sample_types is None:
        groups = load_groups(warehouse, None)
    else:
        groups = [g for t in spec.sample_types for g in load_groups(warehouse, t)]
    return best_response_groups(groups) if spec.best_only else groups


def stage_start(warehouse: Warehouse, spec: StageSpec, config: TrainingConfig) -> str:
    """The model a stage starts from: its parent stage's checkpoint, or the configured base model."""
    if spec.parent is None:
        return config.base_model
    parent = checkpoint_row(warehouse, spec.parent)
    if parent is None:
        raise ValueError(f"{spec.kind} starts from {spec.parent}, which has not been trained")
    return parent["path"]


def has_training_data(warehouse: Warehouse, spec: StageSpec, config: TrainingConfig) -> bool:
    return bool(training_groups(stage_groups(warehouse, spec), spec.objective, config))


def pass_through(warehouse: Warehouse, spec: StageSpec, start_model: str) -> None:
    """Record a stage with no usable samples (small worlds can yield none of a type: realignment needs a rated
    improvement) as its starting model, unchanged, with 0 steps."""
    log.warning("%s: no usable samples; the checkpoint is its starting model %s", spec.kind, start_model)
    record_checkpoint(warehouse, name=spec.kind, kind=spec.kind, objective=spec.objective, path=start_model,
                      base_model=start_model, parent_checkpoint=spec.parent, samples_batches=[], steps=0)


def train_stage(warehouse: Warehouse | None, spec: StageSpec, *, base_model: str, parent_checkpoint: str | None,
                config: TrainingConfig, home: HomeLayout, out_dir: Path | None = None,
                parent_run_id: str | None = None, tags: dict | None = None, name: str | None = None,
                resume: bool = True, groups: list[PromptGroup] | None = None) -> TrainResult:
    """Train one stage/baseline on its groups from `base_model` and record it in `checkpoints`.

    `groups`: the stage's groups when already read (default: `stage_groups(warehouse, spec)`). Under torchrun
    every rank passes the same groups (rank 0 reads them and broadcasts them: DuckDB allows one writer
    process); only rank 0 needs `warehouse`, and it alone records the row."""
    main = is_main_process()
    if main and warehouse is None:
        raise ValueError(f"{spec.kind}: rank 0 records the checkpoint and needs the warehouse")
    if groups is None:
        if warehouse is None:
            raise ValueError(f"{spec.kind}: pass the warehouse or the stage's groups")
        groups = stage_groups(warehouse, spec)
    name = name or spec.kind
    result = train(groups, objective=spec.objective, base_model=base_model,
                   out_dir=out_dir or home.checkpoints / name, config=config, home=home, run_name=name,
                   parent_run_id=parent_run_id, tags={**(tags or {}), "checkpoint_kind": spec.kind},
                   resume=resume)
    if main:
        record_checkpoint(warehouse, name=name, kind=spec.kind, objective=spec.objective,
                          path=str(result.checkpoint_path), base_model=base_model,
                          parent_checkpoint=parent_checkpoint, samples_batches=result.samples_batches,
                          steps=result.steps, mlflow_run_id=result.mlflow_run_id,
                          registered_model=result.registered_model, metrics=result.metrics)
    return result


def run_curriculum(warehouse: Warehouse, config: TrainingConfig, home: HomeLayout, *, tags: dict | None = None,
                   baselines: bool = True) -> dict[str, TrainResult]:
    """All three stages in order, then the baselines, under one parent MLflow run, which stays open while they
    train and ends with them (FINISHED, or FAILED when a stage raises). A stage with no samples is skipped
    (logged); the next stage then starts from the last checkpoint trained. One process: multi-GPU training runs
    each stage under torchrun (training/launch.py)."""
    import mlflow

    from alignment_pipeline.tracking import start_run

    results: dict[str, TrainResult] = {}
    with start_run(home, "curriculum", tags={str(k): str(v) for k, v in (tags or {}).items()},
                   params={"base_model": config.base_model}, nested=mlflow.active_run() is not None) as parent:
        parent_id = parent.info.run_id
        current_model, current_name = config.base_model, None
        for spec in STAGES + (baseline_specs(config) if baselines else ()):
            is_stage = spec in STAGES
            start_model, start_name = (current_model, current_name) if is_stage else (config.base_model, None)
            if not has_training_data(warehouse, spec, config):
                log.warning("skipping %s: no usable %s samples", spec.kind, "/".join(spec.sample_types or ("any",)))
                continue
            result = train_stage(warehouse, spec, base_model=start_model, parent_checkpoint=start_name,
                                 config=config, home=home, parent_run_id=parent_id, tags=tags)
            results[spec.kind] = result
            if is_stage:
                current_model, current_name = str(result.checkpoint_path), spec.kind
    return results
