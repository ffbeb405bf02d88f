"""Each objective's learning rate chosen by a short sweep scored on held-out prompts.

The published rates (`training.<objective>_learning_rate`) are those of 7B models trained for thousands of
steps; a small model trained for a hundred barely moves at them. `training.lr_sweep` lists multipliers of the
objective's own rate: each candidate trains a trial of `lr_sweep_steps` optimizer steps from the stage's
starting model on the prompts not held out, and is scored by the objective's own loss on the held-out prompts
(`lr_sweep_heldout_share`, a seeded hash of the prompt text, so no prompt is on both sides). The lowest loss
wins; on a tie, the candidate closer to the published rate.

The stage itself then trains on every prompt at the chosen rate (`maybe_sweep` returns all groups): the
held-out share only decides the rate, as the reward model's held-out prompts decide nothing it trains on.

Trials run the trainer's own setup and loop (training/trainer.py) without its MLflow run, checkpoints or
registration, in one temporary folder under the home's checkpoints (so DPO/SPPO compute their reference
log-probs once for all trials), removed afterwards. The result reaches the stage's own MLflow run as params
(`sweep_params`, passed as `TrainRequest.extra_params`).

Online objectives (RLHF: TRL's RLOO, which samples its own responses) have no offline loss to score on held-out
samples and are not swept.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training import distributed as dist_utils
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup, TokenizedGroup, limit_responses, tokenize_groups
from alignment_pipeline.training.forward import pack_groups
from alignment_pipeline.training.objectives import (
    NEEDS_REFERENCE,
    OBJECTIVES,
    batch_ratings,
    max_responses,
    objective_loss,
    training_groups,
)
from alignment_pipeline.training.reference import compute_reference_logps
from alignment_pipeline.training.reward_model import split_prompts
from alignment_pipeline.training.runtime import Runtime, resolve_runtime
from alignment_pipeline.training.trainer import (
    NonFiniteLossError,
    TrainRequest,
    _setup,
    load_model,
    resolve_base_model,
    train_loop,
)

SWEEP_DIR = ".lr_sweep"  # under the home's checkpoints; one subfolder per running sweep, removed after it
PARAM_PREFIX = "lr_sweep/"

log = logging.getLogger(__name__)


class TooLittleData(ValueError):
    """The held-out split leaves one side without data the objective can train or be scored on."""


@dataclass(frozen=True)
class SweepResult:
    """The candidates of one sweep, each one's held-out loss, and the rate chosen."""

    objective: str
    published_rate: float  # the objective's own rate, that the multipliers scale
    rates: list[float]
    val_losses: list[float]  # per rate; inf where the trial's loss or gradient went non-finite
    steps: list[int]  # optimizer steps each trial ran
    chosen: float
    start_loss: float  # the starting model's held-out loss: what every trial is measured against
    heldout_groups: int  # prompt groups held out
    train_groups: int  # prompt groups the trials trained on


# -- the split ------------------------------------------------------------------------------------------------

def split_heldout(groups: list[PromptGroup], share: float, seed: int
                  ) -> tuple[list[PromptGroup], list[PromptGroup]]:
    """(train, held out): prompts ranked by a seeded hash of instruction and input, the first round(share ×
    prompts) held out (at least one when there are two prompts or more). Every group of a held-out prompt is
    held out, so the same prompt is never on both sides. The reward model splits the same way."""
    if not 0 < share < 1:
        raise ValueError(f"the held-out share must lie in (0, 1), got {share}")
    return split_prompts(groups, share, seed)


def capped_prompts(groups: list[PromptGroup], limit: int | None) -> list[PromptGroup]:
    """The groups of the first `limit` prompts, in the order given (every group of a kept prompt); all of them
    when `limit` is None."""
    if limit is None:
        return groups
    kept: set[tuple[str, str]] = set()
    out = []
    for g in groups:
        key = (g.instruction, g.input)
        if key not in kept and len(kept) >= limit:
            continue
        kept.add(key)
        out.append(g)
    return out


# -- scoring --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _HeldOut:
    """Held-out data as the objective sees it: tokenised training units and (DPO/SPPO) their reference
    log-probs under the starting model."""

    groups: list[TokenizedGroup]
    reference: torch.Tensor | None
    pad_id: int


def validation_loss(model, groups: list[PromptGroup], objective: str, config: TrainingConfig, *,
                    reference_model=None, home: HomeLayout | None = None) -> float:
    """`objective`'s own loss of `model` on `groups`, without gradients: the mean over the objective's training
    units (prompt groups; DPO pairs, Chain-of-Hindsight segments), tokenised, subsampled (Stable Alignment's
    best plus seeded others, epoch 0) and packed as the trainer does.

    `model`: a model name or directory (resolved under `home`'s models), or a loaded causal LM whose
    `name_or_path` holds its tokenizer. DPO and SPPO score against `reference_model`, the model the stage
    started from (name, directory or loaded model), as the trainer does."""
    _check_sweepable(objective)
    home = home or HomeLayout()
    runtime = resolve_runtime(config.device, config.precision)
    policy, policy_path = _loaded(model, config, runtime, home)
    reference = None
    if objective in NEEDS_REFERENCE:
        if reference_model is None:
            raise ValueError(f"{objective} is scored against its reference: pass reference_model, the model the "
                             "stage started from")
        reference, _ = _loaded(reference_model, config, runtime, home)
    heldout = _prepare_heldout(groups, objective, config, _tokenizer(policy_path), reference, runtime)
    return _heldout_loss(policy, heldout, objective, config, runtime)


def _loaded(model, config: TrainingConfig, runtime: Runtime, home: HomeLayout) -> tuple[object, str]:
    """(the model, the directory its tokenizer is read from)."""
    if isinstance(model, (str, Path)):
        path = resolve_base_model(str(model), home)
        return load_model(path, config, runtime, trainable=False), path
    path = getattr(model, "name_or_path", None)
    if not path:
        raise ValueError("a loaded model without name_or_path: pass its directory instead")
    return model, str(path)


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:  # as the trainer pads
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _prepare_heldout(groups: list[PromptGroup], objective: str, config: TrainingConfig, tokenizer,
                     reference_model, runtime: Runtime) -> _HeldOut:
    data = training_groups(groups, objective, config)
    if not data:
        raise TooLittleData(f"the {len(groups)} held-out prompt groups give {objective} nothing to score"
                            + (" (no two different ratings)" if objective in ("dpo", "coh") else ""))
    tokenized = tokenize_groups(tokenizer, data, max_length=config.max_length,
                                min_prompt_tokens=config.min_prompt_tokens)
    reference = None
    if objective in NEEDS_REFERENCE:
        reference = compute_reference_logps(reference_model, tokenized, pad_id=tokenizer.pad_token_id,
                                            device=runtime.device, batch_size=config.per_device_batch * 2,
                                            autocast=runtime.autocast_factory(),
                                            chunk_size=config.logprob_chunk_size)
    return _HeldOut(tokenized, reference, tokenizer.pad_token_id)


@torch.no_grad()
def _heldout_loss(model, heldout: _HeldOut, objective: str, config: TrainingConfig, runtime: Runtime) -> float:
    """The prompt-weighted mean of the batch losses (each a mean over its prompts, as the trainer's step
    metrics weigh them), in eval mode."""
    k = max_responses(objective, config)
    # Epoch 0's sample of responses: every trial is scored on the same ones.
    groups = [limit_responses(g, k, seed=config.seed, epoch=0) for g in heldout.groups]
    size = config.per_device_batch * 2  # no activations are kept for a backward pass
    was_training = model.training
    model.eval()
    total, weight = 0.0, 0
    try:
        for start in range(0, len(groups), size):
            chunk = groups[start:start + size]
            batch = pack_groups(chunk, heldout.pad_id).to(runtime.device)
            ratings = batch_ratings(chunk, batch.max_responses).to(runtime.device)
            reference = None
            if heldout.reference is not None:  # DPO/SPPO groups are never subsampled: columns match responses
                rows = [g.index for g in chunk]
                reference = torch.nan_to_num(heldout.reference[rows, :batch.max_responses], nan=0.0)
                reference = reference.to(runtime.device)
            with runtime.autocast():
                out, _ = objective_loss(objective, model, batch, ratings, reference, config)
            total += out.metrics()["loss"] * out.n_prompts
            weight += out.n_prompts
    finally:
        model.train(was_training)
    return total / weight if weight else math.nan


# -- the sweep ------------------------------------------------------------------------------------------------

def sweep_learning_rate(groups: list[PromptGroup], objective: str, base_model: str, config: TrainingConfig,
                        home: HomeLayout, rates: list[float] | None = None) -> SweepResult:
    """Train one trial per candidate rate (default: `config.lr_sweep` × the objective's own rate) from
    `base_model` on the training split, score each on the held-out split, and choose. Raises ValueError for an
    online objective (RLHF), TooLittleData when a side of the split has nothing for the objective."""
    _check_sweepable(objective)
    published = config.own_learning_rate(objective)
    rates = _candidates(config, published) if rates is None else [float(r) for r in rates]
    if not rates or any(not (math.isfinite(r) and r > 0) for r in rates):
        raise ValueError(f"learning-rate candidates must be a non-empty list of positive numbers, got {rates}")
    train_split, held = split_heldout(groups, config.lr_sweep_heldout_share, config.seed)
    held = capped_prompts(held, config.lr_sweep_heldout_max)
    for side, name in ((train_split, "not held out"), (held, "held out")):  # said before any model loads
        if not training_groups(side, objective, config):
            raise TooLittleData(f"the {len(side)} prompt groups {name} (of {len(groups)}) give {objective} no "
                                "training data")
    runtime = resolve_runtime(config.device, config.precision)
    dist_utils.init_process_group(runtime, keep=True, timeout_s=config.distributed_timeout_s)
    with dist_utils.main_first(runtime):  # rank 0 builds a tiny base model once; the others then load it
        base_path = resolve_base_model(base_model, home)
    heldout, start_loss = _score_start(held, objective, config, base_path, runtime)
    folder = _sweep_folder(home, objective, base_path, groups, rates)
    if runtime.is_main:  # a killed sweep's leftovers
        shutil.rmtree(folder, ignore_errors=True)
    try:
        trials = [_trial(train_split, objective, base_model, config, home, rate, folder, heldout, runtime)
                  for rate in rates]
        dist_utils.barrier(runtime)  # every rank is done with the folder before rank 0 removes it
    finally:
        if runtime.is_main:
            _remove(folder)
    losses, steps = [t[0] for t in trials], [t[1] for t in trials]
    return SweepResult(objective=objective, published_rate=published, rates=rates, val_losses=losses,
                       steps=steps, chosen=_choose(rates, losses, published), start_loss=start_loss,
                       heldout_groups=len(held), train_groups=len(train_split))


def _check_sweepable(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"{objective!r} is not swept: only the offline objectives ({', '.join(OBJECTIVES)}) have "
                         "a loss to score on held-out samples (RLHF samples its own responses online)")


def _candidates(config: TrainingConfig, published: float) -> list[float]:
    if config.lr_sweep is None:
        raise ValueError("training.lr_sweep is null: pass the rates, or set the multipliers to try")
    return [published * m for m in config.lr_sweep]


def _score_start(held: list[PromptGroup], objective: str, config: TrainingConfig, base_path: str,
                 runtime: Runtime) -> tuple[_HeldOut, float]:
    """The held-out data (with DPO/SPPO's reference log-probs under the starting model) and the starting
    model's own loss on it."""
    start = load_model(base_path, config, runtime, trainable=False)
    try:
        heldout = _prepare_heldout(held, objective, config, _tokenizer(base_path), start, runtime)
        return heldout, _heldout_loss(start, heldout, objective, config, runtime)
    finally:
        del start
        _free_memory(runtime)


def _sweep_folder(home: HomeLayout, objective: str, base_path: str, groups: list[PromptGroup],
                  rates: list[float]) -> Path:
    """The same folder on every rank (so DDP ranks share the reference cache), distinct per stage."""
    digest = hashlib.sha256(repr((objective, base_path, rates, [(g.key, g.instruction) for g in groups]))
                            .encode()).hexdigest()[:16]
    return home.checkpoints / SWEEP_DIR / f"{objective}-{digest}"


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the last sweep out leaves no empty folder among the checkpoints
    except OSError:
        pass  # another sweep is running beside this one


def _trial_config(config: TrainingConfig, objective: str, rate: float, n_units: int, world_size: int
                  ) -> TrainingConfig:
    """The config of one trial: `rate`, exactly `lr_sweep_steps` optimizer steps (as many epochs as that
    takes, the schedule spread over them), no checkpoint, no registration, no nested sweep."""
    steps = config.lr_sweep_steps
    per_epoch = math.ceil(math.ceil(n_units / config.per_device_batch) / (config.grad_accum * world_size))
    return chosen_config(config, objective, rate).model_copy(update={
        # A budget, not a cap: the same loop, and the reference pass (DPO/SPPO) covers only what the trial reaches.
        "max_steps": None, "epochs": math.ceil(steps / per_epoch), "budget_steps": steps, "save_every": steps + 1,
        "register_model": False, "lr_sweep": None})


def _trial(train_split: list[PromptGroup], objective: str, base_model: str, config: TrainingConfig,
           home: HomeLayout, rate: float, folder: Path, heldout: _HeldOut, runtime: Runtime) -> tuple[float, int]:
    """(held-out loss, optimizer steps run) of one candidate; inf when training went non-finite."""
    n_units = len(training_groups(train_split, objective, config))
    request = TrainRequest(train_split, objective=objective, base_model=base_model, out_dir=folder,
                           config=_trial_config(config, objective, rate, n_units, runtime.world_size), home=home,
                           run_name=f"lr-sweep-{objective}-{rate:g}", resume=False)
    t = _setup(request, runtime)  # no MLflow run: the loop logs to one only when it has its id
    try:
        try:
            train_loop(t, None)
        except NonFiniteLossError as exc:  # a rate too high for the model loses, it does not stop the sweep
            log.warning("learning-rate sweep: %s at %g diverged: %s", objective, rate, exc)
            return math.inf, t.state.step
        # FSDP shards live only in the root; otherwise the bare model scores without a collective.
        scorer = t.forward_model if t.sharded else t.model
        loss = _heldout_loss(scorer, heldout, objective, config, runtime)
        log.info("learning-rate sweep: %s at %g: held-out loss %.4f after %d steps", objective, rate, loss,
                 t.state.step)
        return (loss if math.isfinite(loss) else math.inf), t.state.step
    finally:
        del t
        _free_memory(runtime)


def _choose(rates: list[float], losses: list[float], published: float) -> float:
    """The rate of the lowest finite loss; on a tie, the one closer to `published` (in log scale)."""
    ranked = [(loss, abs(math.log(rate / published)), rate) for rate, loss in zip(rates, losses, strict=True)
              if math.isfinite(loss)]
    if not ranked:
        raise ValueError(f"every learning-rate candidate diverged: {rates}")
    return min(ranked)[2]


def _free_memory(runtime: Runtime) -> None:
    gc.collect()
    if runtime.cuda:
        torch.cuda.empty_cache()


# -- the outcome ----------------------------------------------------------------------------------------------

def chosen_config(config: TrainingConfig, objective: str, rate: float) -> TrainingConfig:
    """A copy of `config` in which `objective` trains at `rate`: its own rate set and the global
    `learning_rate` cleared, so that `learning_rate_for(objective)` returns `rate` even where `learning_rate`
    was set (the sweep's choice wins). Other objectives fall back to their own rates in the copy: it is meant
    for this objective's stage alone."""
    _check_sweepable(objective)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a learning rate must be a positive number, got {rate}")
    return config.model_copy(update={f"{objective}_learning_rate": float(rate), "learning_rate": None})


def sweep_params(result: SweepResult) -> dict[str, str | float]:
    """The sweep as MLflow params of the stage's run: the candidates, the choice, and each candidate's
    held-out loss under `lr_sweep/val_loss:<rate>` (MLflow keys allow no '@')."""
    params: dict[str, str | float] = {
        f"{PARAM_PREFIX}rates": ",".join(f"{r:g}" for r in result.rates),
        f"{PARAM_PREFIX}chosen": result.chosen,
        f"{PARAM_PREFIX}published": result.published_rate,
        f"{PARAM_PREFIX}val_loss_start": result.start_loss,
        f"{PARAM_PREFIX}steps": ",".join(str(s) for s in result.steps),
        f"{PARAM_PREFIX}heldout_groups": result.heldout_groups,
        f"{PARAM_PREFIX}train_groups": result.train_groups,
    }
    for rate, loss in zip(result.rates, result.val_losses, strict=True):
        params[f"{PARAM_PREFIX}val_loss:{rate:g}"] = loss
    return params


def maybe_sweep(groups: list[PromptGroup], objective: str, base_model: str, config: TrainingConfig,
                home: HomeLayout) -> tuple[TrainingConfig, dict, list[PromptGroup]]:
    """(the config to train the stage with, params for its MLflow run, the groups to train on).

    Without `training.lr_sweep`: (config, {}, groups), nothing run. Otherwise the sweep picks the rate and the
    stage trains on every group at it (the held-out split only decides the rate). An online objective (RLHF),
    or a split that leaves one side without data, is not swept: the stage trains at its configured rate, and
    the params say why (`lr_sweep/skipped`)."""
    if config.lr_sweep is None:
        return config, {}, groups
    if objective not in OBJECTIVES:
        why = f"{objective} is trained online (it samples its own responses): no held-out loss to sweep on"
        log.warning("learning-rate sweep skipped: %s", why)
        return config, {f"{PARAM_PREFIX}skipped": why}, groups
    try:
        result = sweep_learning_rate(groups, objective, base_model, config, home)
    except TooLittleData as exc:
        log.warning("learning-rate sweep of %s skipped: %s", objective, exc)
        return config, {f"{PARAM_PREFIX}skipped": str(exc)}, groups
    log.info("learning-rate sweep of %s chose %g (published %g); held-out losses %s", objective, result.chosen,
             result.published_rate, dict(zip(result.rates, result.val_losses, strict=True)))
    return chosen_config(config, objective, result.chosen), sweep_params(result), groups


__all__ = ["SweepResult", "TooLittleData", "chosen_config", "maybe_sweep", "split_heldout", "sweep_learning_rate",
           "sweep_params", "validation_loss"]
