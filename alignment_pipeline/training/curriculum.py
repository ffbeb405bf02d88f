"""The paper's three-stage curriculum and the baselines trained from the same base model and data
(the list itself: training/stages.py).

The reference model of DPO/SPPO is the base model (SPPO iteration 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.tracking import add_metrics
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.consumption import consumption, reached
from alignment_pipeline.training.control import CONTROL_TYPE, control_groups
from alignment_pipeline.training.data import PromptGroup, load_groups
from alignment_pipeline.training.distributed import is_main_process
from alignment_pipeline.training.lineage import checkpoint_row, record_checkpoint
from alignment_pipeline.training.objectives import best_response_groups, training_groups
from alignment_pipeline.training.stages import CHECKPOINTS, checkpoint, sample_types
from alignment_pipeline.training.trainer import TrainRequest, TrainResult, consumed_batches, train
from alignment_pipeline.warehouse.db import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    """A checkpoint of training/stages.py with its sample types resolved by the training config."""

    kind: str
    objective: str
    sample_types: tuple[str, ...] | None  # None: every type
    parent: str | None
    best_only: bool = False
    online: bool = False


def spec_for(kind: str, config: TrainingConfig) -> StageSpec:
    entry = checkpoint(kind)
    return StageSpec(entry.kind, entry.objective, sample_types(entry, config), entry.parent, entry.best_only,
                     entry.online)


def stage_groups(warehouse: Warehouse, spec: StageSpec) -> list[PromptGroup]:
    """The training groups of a stage or baseline, read from alignment_samples. `best_only` (the SFT baseline)
    keeps the best response of ranked groups and every critique of a self-critique group: its ratings rate the
    draft, not the critique, so no critique is the best one (stage 2 learns them all too)."""
    if spec.sample_types == (CONTROL_TYPE,):
        groups = control_groups()
    elif spec.sample_types is None:
        groups = load_groups(warehouse, None)
    else:
        groups = [g for t in spec.sample_types for g in load_groups(warehouse, t)]
    if not spec.best_only:
        return groups
    return [g if g.key.startswith("self_critique:") else best_response_groups([g])[0] for g in groups]


def stage_budget(kind: str, config: TrainingConfig) -> int | None:
    """Optimizer steps of a checkpoint under `budget_steps`: a baseline trains the whole budget; the curriculum's
    stages split it by `curriculum_shares` (rounded cumulatively, so the three add up to the budget)."""
    if config.budget_steps is None:
        return None
    stages = [c.kind for c in CHECKPOINTS if c.role == "stage"]
    if kind not in stages:
        return config.budget_steps
    shares = config.curriculum_shares
    total = sum(shares)

    def upto(k: int) -> int:
        return round(config.budget_steps * sum(shares[:k]) / total)

    i = stages.index(kind)
    return max(1, upto(i + 1) - upto(i))


def group_stats(groups: list[PromptGroup]) -> dict:
    """How contrastive a stage's data is: a group with one response, or with all responses rated alike, gives the
    Stable Alignment hinge nothing to compare, and the loss reduces to SFT on it."""
    n = len(groups)
    several = sum(len(g.responses) >= 2 for g in groups)
    ranked = sum(len(set(g.ratings)) >= 2 for g in groups)
    return {"groups": n, "groups_multi_response_share": several / n if n else 0.0,
            "groups_ranked_share": ranked / n if n else 0.0}


def stage_start(warehouse: Warehouse, spec: StageSpec, config: TrainingConfig) -> str:
    """The model a stage starts from: its parent stage's checkpoint, or the configured base model."""
    if spec.parent is None:
        return config.base_model
    parent = checkpoint_row(warehouse, spec.parent)
    if parent is None:
        raise ValueError(f"{spec.kind} starts from {spec.parent}, which has not been trained")
    return parent["path"]


def missing_data(warehouse: Warehouse, spec: StageSpec, config: TrainingConfig) -> str | None:
    """Why the stage cannot train on the samples there are (None: it can). Small worlds can yield none of a
    type (realignment needs a rated improvement) and no pair where every response of a prompt is rated alike."""
    groups = stage_groups(warehouse, spec)
    types = " or ".join(spec.sample_types) if spec.sample_types else "any"
    if not groups:
        return f"no {types} samples"
    if spec.online:  # it samples its own responses: prompts are all it needs, and a reward model
        from alignment_pipeline.training.reward_model import reward_model_row

        return None if reward_model_row(warehouse) is not None else (
            "no reward model (the reward_model asset trained none: see its metadata)")
    if not training_groups(groups, spec.objective, config):
        return (f"none of the {len(groups)} {types} prompt groups holds two differently rated responses, "
                f"which {spec.objective} needs")
    return None


def pass_through(warehouse: Warehouse, spec: StageSpec, start_model: str, *, why: str,
                 home: HomeLayout | None = None) -> str:
    """Record a stage that cannot train as its starting model, unchanged, with 0 steps and `why` as its note: the
    curriculum chains through it and the benchmarks report it as not run. The recorded path is a model
    directory (a project model name such as `tiny:...` is resolved under `home`), never a bare name. Returns
    the note."""
    from alignment_pipeline.llm.models import resolve_model_path

    path = resolve_model_path(start_model, home.models) if home is not None else start_model
    note = f"{why}; it is its starting model ({spec.parent or 'the base model'}), unchanged"
    log.warning("%s not trained: %s", spec.kind, note)
    record_checkpoint(warehouse, name=spec.kind, kind=spec.kind, objective=spec.objective, path=path,
                      base_model=start_model, parent_checkpoint=spec.parent, samples_batches=[], steps=0,
                      note=note)
    return note


def online_trainer(objective: str):
    """The stage trainer of an online objective: RLOO (rlhf) or online SPPO (sppo_online)."""
    if objective == "rlhf":
        from alignment_pipeline.training.rlhf import train_rlhf_stage

        return train_rlhf_stage
    if objective == "sppo_online":
        from alignment_pipeline.training.sppo_online import train_sppo_online_stage

        return train_sppo_online_stage
    raise ValueError(f"no online trainer for objective {objective!r}; online objectives: rlhf, sppo_online")


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
    # Every checkpoint trains its share of the same step budget, and says what data it consumed.
    config = config.model_copy(update={"budget_steps": stage_budget(spec.kind, config)})
    used = consumption(groups, spec.objective, config.dpo_pairs)
    out = out_dir or home.checkpoints / name
    if spec.online:  # sampled from the policy and scored by the reward model, not the contrastive trainer
        result = online_trainer(spec.objective)(warehouse, groups, base_model=base_model, config=config, home=home,
                                                out_dir=out, run_name=name,
                                                parent_run_id=parent_run_id,
                                                tags={**(tags or {}), "checkpoint_kind": spec.kind})
    else:
        from alignment_pipeline.training.sweep import maybe_sweep

        # The objective's rate, chosen on held-out prompts when training.lr_sweep asks; the stage then trains on all.
        config, swept, groups = maybe_sweep(groups, spec.objective, base_model, config, home)
        result = train(TrainRequest(groups, objective=spec.objective, base_model=base_model,
                                    out_dir=out, config=config, home=home,
                                    run_name=name, parent_run_id=parent_run_id,
                                    tags={**(tags or {}), "checkpoint_kind": spec.kind}, resume=resume,
                                    extra_params={**used, **swept}))
        result.metrics.update({k: v for k, v in swept.items() if isinstance(v, (int, float))})
        if main and result.completed:  # the batch log exists once the stage has finished, on rank 0
            trained = reached(groups, training_groups(groups, spec.objective, config), consumed_batches(out),
                              spec.objective, config.dpo_pairs)
            if result.mlflow_run_id:
                add_metrics(home, result.mlflow_run_id, trained)
            used.update(trained)
    result.metrics.update(group_stats(groups))
    result.metrics.update(used)
    if main:
        record_checkpoint(warehouse, name=name, kind=spec.kind, objective=spec.objective,
                          path=str(result.checkpoint_path), base_model=base_model,
                          parent_checkpoint=parent_checkpoint, samples_batches=result.samples_batches,
                          steps=result.steps, mlflow_run_id=result.mlflow_run_id,
                          registered_model=result.registered_model, metrics=result.metrics)
    return result
