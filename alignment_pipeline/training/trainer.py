"""`train`: one training stage (Stable Alignment, SFT, DPO or SPPO) from a base model to a registered checkpoint.

It reads in three parts: `_setup` (model, tokenizer, reference log-probs, optimizer, resumed state), `train_loop`
(the optimizer steps) and `_finish` (summary, final model, registration), around the stage's MLflow run.

Batches hold whole prompt groups, packed with the prompt shared between responses (training/forward.py).
Every `save_every` optimizer steps a resumable checkpoint is written atomically; a killed run resumes from the
newest one at the exact data position, so the step count and loss curve match an uninterrupted run and no batch
is used twice. A NaN/inf loss or gradient stops the stage with an error naming the step; the last good checkpoint
is left untouched.

Under torchrun the same function trains data-parallel (DDP, training/distributed.py): rank 0 alone writes and
reports, with metrics summed over ranks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.tracking import (
    end_run,
    log_and_register,
    log_artifact,
    log_metrics,
    log_text,
    set_tag,
    stage_run,
)
from alignment_pipeline.training import checkpointing as ckpt
from alignment_pipeline.training import distributed as dist_utils
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import (
    PromptGroup,
    TokenizedGroup,
    limit_responses,
    make_batches,
    samples_batches,
    tokenize_groups,
)
from alignment_pipeline.training.forward import PackedBatch, PackedLogps, pack_groups
from alignment_pipeline.training.losses import LossOutput
from alignment_pipeline.training.objectives import (
    NEEDS_REFERENCE,
    Objective,
    batch_ratings,
    check_objective,
    max_responses,
    objective_loss,
    training_groups,
)
from alignment_pipeline.training.reference import compute_reference_logps, fingerprint, load_or_compute
from alignment_pipeline.training.report import plot_loss_curve, registered_model_name
from alignment_pipeline.training.runtime import (
    Runtime,
    flop_params,
    peak_memory_mb,
    peak_tflops,
    reset_peak_memory,
    resolve_runtime,
    synchronize,
    training_flops,
)

MODEL_DIR = "model"
RESUME_DIR = "resume"
RESULT_FILE = "train_result.json"
LOSS_CURVE = "loss_curve.png"

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the stage stopped without saving the bad state."""


@dataclass(frozen=True)
class TrainRequest:
    """One stage to train: `groups` with `objective`, from `base_model`, into `out_dir`, tracked as `run_name`.

    - stable_alignment: per epoch, each group's best response plus a seeded sample of the others,
      `config.num_responses` in all (the paper compared 3); sppo: every response (win-rates need them all).
    - sft: every response given (pass `objective.best_response_groups(groups)` for the SFT baseline).
    - dpo: groups become (chosen, rejected) pairs, chosen rated strictly higher.
    DPO and SPPO use `base_model` as the reference, its log-probs computed once and cached in `out_dir`.
    `parent_run_id`, `tags`: the MLflow run's parent and tags. `resume`: continue from the newest checkpoint in
    `out_dir/resume` (a finished stage leaves none, so it is trained afresh). `stop_after_steps`: stop after
    that many optimizer steps without saving, as a kill would (the result has `completed=False`).
    """

    groups: list[PromptGroup]
    objective: Objective
    base_model: str
    out_dir: Path
    config: TrainingConfig
    home: HomeLayout
    run_name: str
    parent_run_id: str | None = None
    tags: dict | None = None
    resume: bool = True
    stop_after_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))


@dataclass
class TrainResult:
    checkpoint_path: Path  # the final model directory (or, when stopped early, the newest resume checkpoint)
    mlflow_run_id: str
    metrics: dict
    loss_curve_png: Path
    steps: int
    completed: bool = True
    registered_model: str | None = None  # "name/version" in the MLflow model registry
    samples_batches: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {"checkpoint_path": str(self.checkpoint_path), "mlflow_run_id": self.mlflow_run_id,
                "steps": self.steps, "completed": self.completed, "registered_model": self.registered_model,
                "samples_batches": list(self.samples_batches), "loss_curve_png": str(self.loss_curve_png),
                **{f"metric/{k}": v for k, v in self.metrics.items()}}


def train(request: TrainRequest) -> TrainResult:
    """Train as `request` says; save to `out_dir/model`, track in MLflow, register.

    Under torchrun (WORLD_SIZE > 1) every rank calls this with the same request: the model is wrapped in
    DistributedDataParallel (the process group is created here unless the caller already did, and then kept
    for later calls until the process exits), each rank takes every world_size-th batch of the same seeded
    order, and one optimizer step consumes per_device_batch × grad_accum × world_size prompts. Rank 0 alone
    writes checkpoints, the loss curve, the final model and the MLflow run, with metrics reduced over all
    ranks; every rank returns a result once rank 0 has finished writing (other ranks' results carry no MLflow
    run id).
    """
    check_objective(request.objective)
    runtime = resolve_runtime(request.config.device, request.config.precision)
    dist_utils.init_process_group(runtime, keep=True)  # a no-op with one process or when the caller made one
    t = _setup(request, runtime)
    with _open_run(t) if runtime.is_main else nullcontext() as run:
        if run:
            t.state.mlflow_run_id = run.info.run_id
        finished = train_loop(t, request.stop_after_steps)
        metrics, registered = _finish(t, finished)
    if run and not finished:  # marked as a kill would leave it; a resumed run reopens the same MLflow run
        end_run(request.home, t.state.mlflow_run_id, "KILLED")
    return _result(t, finished, metrics, registered)


# -- the loop --------------------------------------------------------------------------------------------------

def train_loop(t: _Training, stop_after_steps: int | None) -> bool:
    """Train to the end (True) or until `stop_after_steps` optimizer steps (False)."""
    cfg, st, rt = t.request.config, t.state, t.runtime
    span = cfg.grad_accum * rt.world_size  # batches of the global order per optimizer step
    reset_peak_memory(rt)
    while st.epoch < cfg.epochs and st.step < t.total_steps:
        batches = make_batches(t.groups, cfg.per_device_batch, seed=cfg.seed, epoch=st.epoch)
        while st.batch_in_epoch < len(batches) and st.step < t.total_steps:
            window = list(range(st.batch_in_epoch, min(st.batch_in_epoch + span, len(batches))))
            started = time.perf_counter()
            # Micro-steps: this rank's batches of the window, their gradients accumulated (and all-reduced).
            sums = dist_utils.StepSums(rt.world_size)
            for micro in dist_utils.micro_steps([len(batches[i]) for i in window], rt):
                b = window[micro.index]
                with dist_utils.gradient_sync(t.forward_model, micro.sync):
                    out, batch = t.forward(batches[b], st.epoch)
                    loss = float(out.loss.detach())
                    if not math.isfinite(loss) and rt.world_size == 1:  # under DDP: after the all-reduce, below
                        t.fail(f"loss is {loss}", f"batch {b}, groups {batches[b]}")
                    (out.loss * micro.loss_scale).backward()
                sums.add(micro, out.metrics(), loss=loss, data_tokens=batch.data_tokens,
                         packed_tokens=batch.packed_tokens, scored_tokens=batch.target.numel(),
                         where=f"batch {b} groups {batches[b]} loss {loss}")
            sums = sums.reduce(rt)
            if sums.n_bad:  # every rank stops here together, before the optimizer step
                here = "; here: " + ", ".join(sums.bad) if sums.bad else ""
                t.fail(f"loss is not finite in {sums.n_bad} micro-batch(es)", f"window batches {window}{here}")
            # Clip, step; the scheduler then sets the next step's learning rate.
            grad_norm = torch.nn.utils.clip_grad_norm_(t.params, cfg.max_grad_norm)
            if not torch.isfinite(grad_norm):
                t.fail(f"gradient norm is {float(grad_norm)}", f"batch {window[-1]}, groups {batches[window[-1]]}")
            t.optimizer.step()
            t.scheduler.step()
            t.optimizer.zero_grad(set_to_none=True)
            synchronize(rt)
            seconds = time.perf_counter() - started
            # Log.
            st.step += 1
            st.batch_in_epoch = window[-1] + 1
            st.tokens += sums.data_tokens
            st.train_seconds += seconds
            st.consumed.extend([st.step, st.epoch, i, batches[i]] for i in window)
            record = t.step_record(sums, float(grad_norm), seconds, st.epoch + st.batch_in_epoch / len(batches))
            st.history.append(record)
            if rt.is_main and st.step % cfg.log_every == 0:
                t.log_step(record)
            # Checkpoint.
            if st.step % cfg.save_every == 0:
                t.save(record)
            if stop_after_steps is not None and stop_after_steps <= st.step < t.total_steps:
                return False
        if st.batch_in_epoch >= len(batches):
            st.epoch += 1
            st.batch_in_epoch = 0
    return True


@dataclass
class _Training:
    """What `_setup` builds and the loop works with."""

    request: TrainRequest
    runtime: Runtime
    base_path: str
    tokenizer: object
    groups: list[TokenizedGroup]  # groups[i].index == i
    reference: torch.Tensor | None  # DPO/SPPO: summed reference log-probs per group and response
    reference_seconds: float
    model: object  # the bare model: checkpoints, FLOP counts, the final save
    forward_model: object  # what the forward runs through: the model, or its DDP wrapper (gradient all-reduce)
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    total_steps: int
    state: ckpt.TrainState

    def __post_init__(self) -> None:
        self.resume_root = self.request.out_dir / RESUME_DIR
        self.samples_batches = samples_batches(self.request.groups)
        self.responses_per_group = max_responses(self.request.objective, self.request.config)
        self.flops_split = flop_params(self.model)
        self.peak_tflops = peak_tflops(self.runtime, self.request.config.peak_tflops)

    def forward(self, indices: list[int], epoch: int) -> tuple[LossOutput, PackedBatch]:
        """The loss of one micro-batch of group indices."""
        cfg, rt = self.request.config, self.runtime
        groups = [limit_responses(self.groups[i], self.responses_per_group, seed=cfg.seed, epoch=epoch)
                  for i in indices]
        batch = pack_groups(groups, self.tokenizer.pad_token_id).to(rt.device)
        ratings = batch_ratings(groups, batch.max_responses).to(rt.device)
        reference = None
        if self.reference is not None:  # DPO/SPPO groups are never subsampled: columns match responses
            reference = torch.nan_to_num(self.reference[indices, :batch.max_responses], nan=0.0).to(rt.device)
        with rt.autocast():
            out, _ = objective_loss(self.request.objective, self.forward_model, batch, ratings, reference, cfg)
        return out, batch

    def step_record(self, sums: dist_utils.StepSums, grad_norm: float, seconds: float, epoch: float) -> dict:
        """One step's metrics: the loss terms (prompt-weighted means over the window), the learning rate,
        gradient norm and throughput."""
        rt = self.runtime
        record = {f"train/{k}": v for k, v in sums.metrics.items() if k != "n_prompts"}
        record["train/lr"] = self.scheduler.get_last_lr()[0]
        record["train/grad_norm"] = grad_norm
        record.update({"step": self.state.step, "train/epoch": epoch, "perf/tokens_per_s": sums.data_tokens / seconds,
                       # the highest of any rank: the one that decides whether a setting fits
                       "perf/peak_memory_mb": dist_utils.all_reduce([peak_memory_mb(rt)], rt, op="max")[0]})
        if self.peak_tflops:  # per accelerator: the FLOPs of every rank over the time of all of them
            flops = training_flops(*self.flops_split, sums.packed_tokens, sums.scored_tokens)
            record["perf/mfu"] = flops / seconds / (self.peak_tflops * 1e12 * rt.world_size)
        return record

    def log_step(self, record: dict) -> None:
        if self.state.mlflow_run_id:
            log_metrics({k: v for k, v in record.items() if k != "step"}, step=self.state.step)
        log.info("step %d/%d loss %.4f, %.0f tokens/s", self.state.step, self.total_steps,
                 record.get("train/loss", float("nan")), record["perf/tokens_per_s"])

    def save(self, record: dict) -> None:
        """Rank 0 writes the checkpoint (weights and optimizer state are the same on every rank); every rank's
        RNG state goes with it."""
        rt = self.runtime
        rngs = dist_utils.gather_to_main(ckpt.rng_state(), rt) if rt.world_size > 1 else None
        if not rt.is_main:
            return
        saved = ckpt.save_checkpoint(self.resume_root, self.model, self.tokenizer, self.optimizer, self.scheduler,
                                     self.state, keep=self.request.config.keep_checkpoints, rng_per_rank=rngs)
        log.info("step %d/%d loss %.4f; checkpoint %s", self.state.step, self.total_steps,
                 record.get("train/loss", float("nan")), saved)

    def fail(self, what: str, where: str) -> NoReturn:
        self.optimizer.zero_grad(set_to_none=True)
        last = ckpt.latest_checkpoint(self.resume_root)
        kept = f"last good checkpoint kept at {last}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"{self.request.objective}: {what} at step {self.state.step + 1} (epoch {self.state.epoch}, {where}); "
            f"training stopped, {kept}")


# -- setup -----------------------------------------------------------------------------------------------------

def _setup(request: TrainRequest, runtime: Runtime) -> _Training:
    """The tokenized data, the model (LoRA-wrapped when configured) with its reference log-probs, the optimizer
    and schedule, and the state to start from: fresh, or the newest checkpoint's when resuming."""
    cfg, out_dir = request.config, request.out_dir
    resume_root = out_dir / RESUME_DIR
    data = training_groups(request.groups, request.objective, cfg)
    if not data:
        raise ValueError(f"objective {request.objective!r} has no training data ({len(request.groups)} groups given"
                         + (", none with two different ratings" if request.objective == "dpo" else "") + ")")
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.clean_temporaries(resume_root)
        if not request.resume and resume_root.exists():
            shutil.rmtree(resume_root)
    with dist_utils.main_first(runtime):  # rank 0 builds a tiny base model once; the others then load it
        base_path = resolve_base_model(request.base_model, request.home)
    # Rank 0's view of the newest complete checkpoint, so every rank resumes from the same one.
    latest = dist_utils.broadcast_object(
        ckpt.latest_checkpoint(resume_root) if (request.resume and runtime.is_main) else None, runtime)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(latest) if latest else base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenized = tokenize_groups(tokenizer, data, max_length=cfg.max_length, min_prompt_tokens=cfg.min_prompt_tokens)
    _seed_everything(cfg.seed)

    model, reference, reference_seconds = _model_and_reference(request, runtime, base_path, latest, tokenizer,
                                                               tokenized)
    # The forward goes through the DDP wrapper (training/forward.py: PackedLogps) so gradients are all-reduced.
    forward_model = dist_utils.wrap_ddp(PackedLogps(model), runtime) if runtime.world_size > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler, total_steps = _optimizer(params, len(tokenized), cfg, runtime)
    state = _start_state(latest, _run_fingerprint(request.objective, base_path, tokenized, cfg, total_steps,
                                                  runtime.world_size), optimizer, scheduler, runtime)
    return _Training(request=request, runtime=runtime, base_path=base_path, tokenizer=tokenizer, groups=tokenized,
                     reference=reference, reference_seconds=reference_seconds, model=model,
                     forward_model=forward_model, params=params, optimizer=optimizer, scheduler=scheduler,
                     total_steps=total_steps, state=state)


def resolve_base_model(base_model: str, home: HomeLayout) -> str:
    from alignment_pipeline.llm.models import resolve_model_path

    return resolve_model_path(base_model, home.models)


def load_model(path: str | Path, config: TrainingConfig, runtime: Runtime, *, trainable: bool = True):
    """The model in float32 master weights (bf16 autocast does the compute on CUDA)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                 attn_implementation=config.attn_implementation)
    model.config.use_cache = False
    model.to(runtime.device)
    if trainable and config.gradient_checkpointing:
        # newer transformers renamed it (the old name warns); older releases only have the old one
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _model_and_reference(request: TrainRequest, runtime: Runtime, base_path: str, latest: Path | None, tokenizer,
                         tokenized: list[TokenizedGroup]) -> tuple[object, torch.Tensor | None, float]:
    """The model to train, in training mode, and (DPO/SPPO) the reference log-probs with the seconds spent
    computing them now. The reference comes from the base model, before any update (never from resumed
    weights): rank 0 computes and caches it; the other ranks read the cache."""
    cfg = request.config
    model = reference = None
    reference_seconds = 0.0
    with dist_utils.main_first(runtime):
        if request.objective in NEEDS_REFERENCE:
            if latest is None:  # the model to train is the base model: it serves as the reference first
                model = load_model(base_path, cfg, runtime)
            reference, reference_seconds = _reference(model, tokenized, base_path, request.out_dir, tokenizer, cfg,
                                                      runtime)
    if model is None:
        model = load_model(base_path if (cfg.lora or latest is None) else latest, cfg, runtime)
    if cfg.lora:
        model = _wrap_lora(model, cfg, latest)
    model.train()
    return model, reference, reference_seconds


def _wrap_lora(model, config: TrainingConfig, adapter_dir: Path | None = None):
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_dir is not None:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _reference(model, tokenized: list[TokenizedGroup], base_path: str, out_dir: Path, tokenizer,
               config: TrainingConfig, runtime: Runtime) -> tuple[torch.Tensor, float]:
    """The cached reference log-probs, and the seconds spent computing them now (0 when read back)."""
    spent = [0.0]

    def compute() -> torch.Tensor:
        started = time.perf_counter()
        ref_model = model if model is not None else load_model(base_path, config, runtime, trainable=False)
        try:
            return compute_reference_logps(ref_model, tokenized, pad_id=tokenizer.pad_token_id,
                                           device=runtime.device, batch_size=config.per_device_batch * 2,
                                           autocast=runtime.autocast_factory(),
                                           chunk_size=config.logprob_chunk_size)
        finally:
            synchronize(runtime)
            spent[0] = time.perf_counter() - started
            if model is None:
                del ref_model

    logps = load_or_compute(out_dir / "reference_logps.pt", fingerprint(base_path, tokenized), compute)
    return logps, spent[0]


def _optimizer(params: list, n_groups: int, config: TrainingConfig, runtime: Runtime):
    """AdamW and its learning-rate schedule over the stage's optimizer steps (also returned)."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=runtime.cuda)
    n_batches = math.ceil(n_groups / config.per_device_batch)
    steps_per_epoch = math.ceil(n_batches / (config.grad_accum * runtime.world_size))
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = get_scheduler(config.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler, total_steps


def _start_state(latest: Path | None, run_fingerprint: str, optimizer, scheduler, runtime: Runtime
                 ) -> ckpt.TrainState:
    """A fresh state, or the checkpoint's: its optimizer, schedule and RNG states loaded, its data position and
    history continued."""
    if latest is None:
        return ckpt.TrainState(fingerprint=run_fingerprint)
    saved = ckpt.load_trainer_state(latest)
    if saved["state"].get("fingerprint") != run_fingerprint:
        raise ValueError(f"cannot resume from {latest}: it was written for a different objective, base model, "
                         "data or batching; pass resume=False to start this stage afresh")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    ckpt.set_rng_state(ckpt.rng_for_rank(saved, runtime.rank, runtime.world_size))
    return ckpt.TrainState(**saved["state"])


# Settings that decide what each optimizer step sees; the rest (saving, logging) may change across a resume.
_ORDER_FIELDS = ("learning_rate", "epochs", "per_device_batch", "grad_accum", "max_length", "min_prompt_tokens",
                 "num_responses", "seed", "lr_scheduler", "warmup_ratio", "max_steps", "dpo_pairs", "lora")


def _run_fingerprint(objective: str, base_path: str, tokenized: list[TokenizedGroup], config: TrainingConfig,
                     total_steps: int, world_size: int = 1) -> str:
    order = {k: getattr(config, k) for k in _ORDER_FIELDS}
    # A step sees grad_accum × world_size batches of one global order: only that product decides the data, so a
    # checkpoint resumes on another process count with the same effective batch.
    order["grad_accum"] = config.grad_accum * world_size
    digest = hashlib.sha256(json.dumps([objective, base_path, total_steps, order]).encode())
    for g in tokenized:
        digest.update(json.dumps([g.prompt_ids, g.response_ids, g.ratings]).encode())
    return digest.hexdigest()


def _open_run(t: _Training):
    """Rank 0's MLflow run of the stage, with its parameters; a resumed stage reopens its own run."""
    r, rt, cfg = t.request, t.runtime, t.request.config
    params = {"objective": r.objective, "base_model": r.base_model, "base_model_path": t.base_path,
              "n_groups": len(r.groups), "n_training_groups": len(t.groups),
              "n_responses": sum(len(g.response_ids) for g in t.groups), "total_steps": t.total_steps,
              "device": str(rt.device), "bf16": rt.bf16, "samples_batches": ",".join(t.samples_batches),
              "world_size": rt.world_size, "effective_batch": cfg.per_device_batch * cfg.grad_accum * rt.world_size,
              "n_params": sum(p.numel() for p in t.model.parameters()),
              "n_trainable_params": sum(p.numel() for p in t.params), **cfg.model_dump()}
    return stage_run(r.home, r.run_name, run_id=t.state.mlflow_run_id, parent_run_id=r.parent_run_id, tags=r.tags,
                     params=params)


# -- finish ----------------------------------------------------------------------------------------------------

def _finish(t: _Training, finished: bool) -> tuple[dict, str | None]:
    """Inside the stage's run: the summary metrics and (rank 0) the loss curve; when the stage finished, the
    final model, its outputs logged and the model registered. Returns the metrics and the registered model."""
    r, st = t.request, t.state
    metrics = _summary(st, t.runtime)
    # Reference pass time (plus loading the base model when it was needed for that alone).
    metrics["reference_seconds"] = round(t.reference_seconds, 3)
    if not t.runtime.is_main:
        return metrics, None
    png = plot_loss_curve(st.history, r.out_dir / LOSS_CURVE, title=f"{r.run_name} ({r.objective})")
    if not finished:
        set_tag("interrupted_at_step", str(st.step))
        return metrics, None
    final = _save_final(t.model, t.tokenizer, r.out_dir, r.config)
    log_metrics({f"final/{k}": float(v) for k, v in metrics.items() if _is_number(v)})
    log_artifact(png)
    log_text(json.dumps(st.consumed), "batches_consumed.json")
    if not r.config.register_model:
        return metrics, None
    return metrics, log_and_register(
        final, run_id=st.mlflow_run_id, name=registered_model_name(r.run_name),
        tags={"samples_batches": ",".join(t.samples_batches), "objective": r.objective,
              "base_model": r.base_model, "steps": str(st.step)})


def _result(t: _Training, finished: bool, metrics: dict, registered: str | None) -> TrainResult:
    """Every rank's result, once rank 0 has finished writing. A finished stage leaves its result and batch log
    beside the model and drops its optimizer state; a stopped one points at its newest checkpoint."""
    r, st, main = t.request, t.state, t.runtime.is_main
    png = r.out_dir / LOSS_CURVE
    if not finished:
        dist_utils.barrier(t.runtime)  # rank 0's last checkpoint is complete before anyone looks for it
        last = ckpt.latest_checkpoint(t.resume_root)
        return TrainResult(checkpoint_path=last or t.resume_root, mlflow_run_id=st.mlflow_run_id or "",
                           metrics=metrics, loss_curve_png=png, steps=st.step, completed=False,
                           samples_batches=t.samples_batches)
    result = TrainResult(checkpoint_path=r.out_dir / MODEL_DIR, mlflow_run_id=(st.mlflow_run_id or "") if main else "",
                         metrics=metrics, loss_curve_png=png, steps=st.step, registered_model=registered,
                         samples_batches=t.samples_batches)
    if main:
        (r.out_dir / RESULT_FILE).write_text(json.dumps(result.metadata(), indent=2, default=str))
        (r.out_dir / "batches_consumed.json").write_text(json.dumps(st.consumed))
        shutil.rmtree(t.resume_root, ignore_errors=True)  # the stage is done; the optimizer state is not needed
    dist_utils.barrier(t.runtime)  # every rank returns once the final model and result are on disk
    return result


def _save_final(model, tokenizer, out_dir: Path, config: TrainingConfig) -> Path:
    final = out_dir / MODEL_DIR
    tmp = out_dir / f".tmp-{MODEL_DIR}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model.merge_and_unload() if config.lora else model
    to_save.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _summary(state: ckpt.TrainState, runtime: Runtime) -> dict:
    last = state.history[-1] if state.history else {}
    tail = state.history[-10:]
    out = {"steps": state.step, "epochs_completed": state.epoch, "tokens": state.tokens,
           "train_seconds": round(state.train_seconds, 3),
           "tokens_per_s": state.tokens / state.train_seconds if state.train_seconds else 0.0,
           "peak_memory_mb": dist_utils.all_reduce([peak_memory_mb(runtime)], runtime, op="max")[0],
           "loss_last10": float(np.mean([h["train/loss"] for h in tail])) if tail else float("nan")}
    for key, value in last.items():
        if key.startswith("train/") and _is_number(value):
            out[key.split("/", 1)[1]] = value
    if "perf/mfu" in last:
        out["mfu"] = float(np.mean([h["perf/mfu"] for h in tail]))
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def consumed_batches(result_dir: Path) -> list[list]:
    """The batch log of a finished stage: [step, epoch, batch_index, [group indices]] per batch used."""
    return json.loads((Path(result_dir) / "batches_consumed.json").read_text())


__all__ = ["NonFiniteLossError", "TrainRequest", "TrainResult", "consumed_batches", "load_model", "train",
           "train_loop"]
