"""`train`: one training stage (Stable Alignment, SFT, DPO or SPPO) from a base model to a registered checkpoint.

It reads in three parts: `_setup` (model, tokenizer, reference log-probs, optimizer, resumed state), `train_loop`
(the optimizer steps) and `_finish` (summary, final model, registration), around the stage's MLflow run.

Batches hold whole prompt groups, packed with the prompt shared between responses (training/forward.py).
Every `save_every` optimizer steps a resumable checkpoint is written atomically; a killed run resumes from the
newest one at the exact data position, so the step count and loss curve match an uninterrupted run and no batch
is used twice. A NaN/inf loss or gradient stops the stage with an error naming the step; the last good checkpoint
is left untouched.

Under torchrun the same function trains data-parallel: DDP (training/distributed.py), or FSDP
(training.strategy: fsdp, training/fsdp.py) for models whose weights and optimizer state do not fit one GPU.
Rank 0 alone writes and reports, with metrics summed over ranks; every collective comes before rank 0's MLflow
copy and registration, so no rank waits in one while rank 0 uploads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
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
    last_logged_step,
    log_and_register,
    log_artifact,
    log_metrics,
    log_text,
    model_reference,
    set_tag,
    stage_run,
)
from alignment_pipeline.training import checkpointing as ckpt
from alignment_pipeline.training import distributed as dist_utils
from alignment_pipeline.training import fsdp
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import (
    PromptGroup,
    TokenizedGroup,
    budget_groups,
    limit_responses,
    make_batches,
    samples_batches,
    tokenize_groups,
)
from alignment_pipeline.training.forward import (
    PackedBatch,
    PackedLogps,
    disable_dropout,
    model_attn_implementation,
    pack_groups,
)
from alignment_pipeline.training.losses import LossOutput, read_outputs
from alignment_pipeline.training.objectives import (
    NEEDS_REFERENCE,
    OBJECTIVES,
    Objective,
    batch_ratings,
    check_objective,
    max_responses,
    objective_loss,
    training_groups,
)
from alignment_pipeline.training.reference import (
    compute_reference_logps,
    fingerprint,
    merge_shards,
    read_cache,
    shard_groups,
    write_cache,
)
from alignment_pipeline.training.report import model_description, plot_loss_curve, registered_model_name
from alignment_pipeline.training.run_params import objective_params
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
    `extra_params`: more MLflow params of the stage's run (e.g. a learning-rate sweep's, training/sweep.py).
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
    extra_params: dict | None = None

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
    DistributedDataParallel, or sharded with FSDP (training.strategy), the process group created here unless
    the caller already did (and then kept for later calls until the process exits); each rank takes every
    world_size-th batch of the same seeded order, and one optimizer step consumes per_device_batch ×
    grad_accum × world_size prompts. Rank 0 alone writes the loss curve, the final model and the MLflow run
    (and, under DDP, the checkpoints), with metrics reduced over all ranks. Every rank returns once the final
    model is on disk; rank 0 then logs and registers it alone (other ranks' results carry no MLflow run id).
    """
    check_objective(request.objective)
    runtime = resolve_runtime(request.config.device, request.config.precision)
    # a no-op with one process or when the caller made one
    dist_utils.init_process_group(runtime, keep=True, timeout_s=request.config.distributed_timeout_s)
    # Rank 0 holds the output folder while the stage trains; every rank stops when another trainer holds it.
    lock, busy = None, None
    if runtime.is_main:
        try:
            lock = ckpt.claim_output_dir(request.out_dir)
        except ckpt.OutputBusy as exc:
            busy = str(exc)
    busy = dist_utils.broadcast_object(busy, runtime)
    if busy:
        raise ckpt.OutputBusy(busy)
    try:
        return _train(request, runtime)
    finally:
        if lock is not None:
            ckpt.release_output_dir(lock)


def _train(request: TrainRequest, runtime: Runtime) -> TrainResult:
    t = _setup(request, runtime)
    with _open_run(t) if runtime.is_main else nullcontext() as run:
        if run:
            t.state.mlflow_run_id = run.info.run_id
            # A resumed run reopens its MLflow run, which already holds the steps trained after the checkpoint
            # before the stop: they are trained again (to the same values) but not logged twice.
            t.logged_through = last_logged_step(run.info.run_id, "train/loss")
        finished = train_loop(t, request.stop_after_steps)
        metrics = _finish(t, finished)
        # The last collective: the others wait for rank 0's final model (bounded by distributed_timeout_s),
        # never for the MLflow copy and registration, which rank 0 does alone after it.
        dist_utils.barrier(runtime)
        registered = _publish(t, finished, metrics) if runtime.is_main else None
    if run and not finished:  # marked as a kill would leave it; a resumed run reopens the same MLflow run
        end_run(request.home, t.state.mlflow_run_id, "KILLED")
    return _result(t, finished, metrics, registered)


# -- the loop --------------------------------------------------------------------------------------------------

def train_loop(t: _Training, stop_after_steps: int | None) -> bool:
    """Train to the end (True) or until `stop_after_steps` optimizer steps (False)."""
    cfg, st, rt = t.request.config, t.state, t.runtime
    span = cfg.grad_accum * rt.world_size  # batches of the global order per optimizer step
    reset_peak_memory(rt)
    # Under a step budget the epochs are as many as the budget takes.
    while (cfg.budget_steps is not None or st.epoch < cfg.epochs) and st.step < t.total_steps:
        batches = make_batches(t.groups, cfg.per_device_batch, seed=cfg.seed, epoch=st.epoch)
        while st.batch_in_epoch < len(batches) and st.step < t.total_steps:
            window = list(range(st.batch_in_epoch, min(st.batch_in_epoch + span, len(batches))))
            started = time.perf_counter()
            # Micro-steps: this rank's batches of the window, their gradients accumulated (and all-reduced).
            sums = dist_utils.StepSums(rt.world_size)
            done = []
            for micro in dist_utils.micro_steps([len(batches[i]) for i in window], rt, lockstep=t.sharded):
                b = window[micro.index]
                with dist_utils.gradient_sync(t.forward_model, micro.sync):
                    out, batch = t.forward(batches[b], st.epoch)
                    (out.loss * micro.loss_scale).backward()
                done.append((micro, b, out, batch.data_tokens, batch.packed_tokens, batch.target.numel()))
            # The losses and metrics of the whole step come to the host in one transfer; a non-finite loss
            # stops the step below, before the optimizer sees its gradients.
            read_outputs([d[2] for d in done])
            for micro, b, out, data_tokens, packed_tokens, scored_tokens in done:
                metrics = out.metrics()
                if not math.isfinite(metrics["loss"]) and rt.world_size == 1:  # under DDP: after the all-reduce
                    t.fail(f"loss is {metrics['loss']}", f"batch {b}, groups {batches[b]}")
                sums.add(micro, metrics, loss=metrics["loss"], data_tokens=data_tokens, packed_tokens=packed_tokens,
                         scored_tokens=scored_tokens, where=f"batch {b} groups {batches[b]} loss {metrics['loss']}")
            sums = sums.reduce(rt)
            if sums.n_bad:  # every rank stops here together, before the optimizer step
                here = "; here: " + ", ".join(sums.bad) if sums.bad else ""
                t.fail(f"loss is not finite in {sums.n_bad} micro-batch(es)", f"window batches {window}{here}")
            # Clip, step; the scheduler then sets the next step's learning rate.
            grad_norm = t.clip_gradients()
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
    forward_model: object  # what the forward runs through: the model, its DDP wrapper or its FSDP root
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    total_steps: int
    state: ckpt.TrainState
    sharded: bool = False  # FSDP: weights, gradients and optimizer state are split across the ranks
    logged_through: int = 0  # the last step the MLflow run already holds (a resumed run's earlier attempt)

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
        if self.state.mlflow_run_id and self.state.step > self.logged_through:
            log_metrics({k: v for k, v in record.items() if k != "step"}, step=self.state.step)
        log.info("step %d/%d loss %.4f, %.0f tokens/s", self.state.step, self.total_steps,
                 record.get("train/loss", float("nan")), record["perf/tokens_per_s"])

    def clip_gradients(self) -> torch.Tensor:
        """Clip to max_grad_norm; the global norm before clipping."""
        if self.sharded:
            return fsdp.clip_grad_norm(self.params, self.request.config.max_grad_norm)
        return torch.nn.utils.clip_grad_norm_(self.params, self.request.config.max_grad_norm)

    def save(self, record: dict) -> None:
        """A resumable checkpoint with every rank's RNG state. DDP: rank 0 writes it (weights and optimizer
        state are the same on every rank); FSDP: every rank writes its shards (training/fsdp.py)."""
        rt, keep = self.runtime, self.request.config.keep_checkpoints
        rngs = dist_utils.gather_to_main(ckpt.rng_state(), rt) if rt.world_size > 1 else None
        saved = None
        if self.sharded:
            saved = fsdp.save_checkpoint(self.resume_root, self.forward_model, self.optimizer, self.tokenizer,
                                         self.scheduler, self.state, rt, keep=keep, rng_per_rank=rngs)
        elif rt.is_main:
            saved = ckpt.save_checkpoint(self.resume_root, self.model, self.tokenizer, self.optimizer,
                                         self.scheduler, self.state, keep=keep, rng_per_rank=rngs)
        # The others wait for rank 0's write here, bounded by distributed_timeout_s, not inside the next
        # step's first collective.
        dist_utils.barrier(rt)
        if not saved:
            return
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
    sharded = cfg.strategy == "fsdp" and runtime.world_size > 1
    if sharded and cfg.lora:
        raise ValueError("training.strategy fsdp does not train LoRA adapters; use ddp for lora: true")
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
    # Rank 0's view of the newest intact checkpoint (corrupt ones are set aside), so every rank resumes from the
    # same one.
    latest = dist_utils.broadcast_object(
        ckpt.latest_checkpoint(resume_root, verify=True) if (request.resume and runtime.is_main) else None, runtime)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(latest) if latest else base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenized = tokenize_groups(tokenizer, data, max_length=cfg.max_length, min_prompt_tokens=cfg.min_prompt_tokens)
    _seed_everything(cfg.seed)

    if latest is not None and fsdp.is_sharded_checkpoint(latest) != sharded:
        held = "sharded (fsdp)" if not sharded else "full (ddp or one process)"
        raise ValueError(f"cannot resume from {latest}: it holds {held} state, and this run uses training.strategy "
                         f"{cfg.strategy} on {runtime.world_size} process(es); resume as it was written or pass "
                         "resume=False")
    model, reference, reference_seconds = _model_and_reference(request, runtime, base_path, latest, tokenizer,
                                                               tokenized, sharded)
    # The forward goes through the DDP wrapper or the FSDP root (training/forward.py: PackedLogps), whose
    # backward reduces the gradients across ranks.
    if sharded:
        forward_model = fsdp.shard_model(model, runtime)
    else:
        forward_model = dist_utils.wrap_ddp(PackedLogps(model), runtime) if runtime.world_size > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]  # sharded DTensors under FSDP
    optimizer, scheduler, total_steps = _optimizer(params, len(tokenized), cfg, runtime, request.objective)
    settings = _result_settings(cfg, request.objective, runtime.world_size)
    run_fingerprint = _run_fingerprint(request.objective, base_path, tokenized, settings, total_steps)
    state = _start_state(latest, run_fingerprint, settings, optimizer, scheduler, runtime,
                         sharded_root=forward_model if sharded else None)
    return _Training(request=request, runtime=runtime, base_path=base_path, tokenizer=tokenizer, groups=tokenized,
                     reference=reference, reference_seconds=reference_seconds, model=model,
                     forward_model=forward_model, params=params, optimizer=optimizer, scheduler=scheduler,
                     total_steps=total_steps, state=state, sharded=sharded)


def resolve_base_model(base_model: str, home: HomeLayout) -> str:
    from alignment_pipeline.llm.models import resolve_model_path

    return resolve_model_path(base_model, home.models)


def load_model(path: str | Path, config: TrainingConfig, runtime: Runtime, *, trainable: bool = True):
    """The model in float32 master weights (bf16 autocast does the compute on CUDA)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                 attn_implementation=model_attn_implementation(
                                                     config.attn_implementation, runtime.device))
    model.config.use_cache = False
    if config.disable_dropout:
        disable_dropout(model)
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
                         tokenized: list[TokenizedGroup], sharded: bool = False
                         ) -> tuple[object, torch.Tensor | None, float]:
    """The model to train, in training mode, and (DPO/SPPO) the reference log-probs with the seconds spent
    computing them now. The reference comes from the base model, before any update (never from resumed
    weights). Resumed weights: the checkpoint's model (DDP), or the base model that the sharded state is
    loaded into after sharding (FSDP: _start_state)."""
    cfg = request.config
    model = reference = None
    reference_seconds = 0.0
    if request.objective in NEEDS_REFERENCE:
        if latest is None:  # the model to train is the base model: it serves as the reference first
            model = load_model(base_path, cfg, runtime)
        reference, reference_seconds = _reference(model, tokenized, base_path, request.out_dir, tokenizer, cfg,
                                                  runtime)
    if model is None:
        model = load_model(base_path if (cfg.lora or latest is None or sharded) else latest, cfg, runtime)
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
    """The cached reference log-probs, and the seconds spent computing them now (0 when read back).

    Rank 0 reads the cache and shares it. Without one, every rank computes its share of the groups and the
    shares are gathered to every rank (rank 0 then writes the cache): no rank waits in a collective while
    another runs the whole pass."""
    # Under a step budget, only the groups the budget reaches: the rest would cost a forward pass each and never
    # be read (their rows stay NaN).
    reached = None
    if config.budget_steps is not None:
        reached = budget_groups(tokenized, config.per_device_batch, seed=config.seed,
                                batches_per_step=config.grad_accum * runtime.world_size, steps=config.budget_steps)
    needed = tokenized if reached is None else [g for g in tokenized if g.index in reached]
    cache, key = out_dir / "reference_logps.pt", fingerprint(base_path, needed)
    cached = dist_utils.broadcast_object(read_cache(cache, key) if runtime.is_main else None, runtime)
    if cached is not None:
        return cached, 0.0
    started = time.perf_counter()
    ref_model = model if model is not None else load_model(base_path, config, runtime, trainable=False)
    mine = shard_groups(needed, runtime.rank, runtime.world_size)
    logps = compute_reference_logps(ref_model, mine, pad_id=tokenizer.pad_token_id, device=runtime.device,
                                    batch_size=config.per_device_batch * 2, autocast=runtime.autocast_factory(),
                                    chunk_size=config.logprob_chunk_size, n_rows=len(tokenized))
    del ref_model
    indices = [g.index for g in mine]
    logps = merge_shards(dist_utils.all_gather((indices, logps[indices]), runtime), len(tokenized),
                         expected_rows=None if reached is None else sorted(reached))
    synchronize(runtime)
    if runtime.is_main:
        write_cache(cache, key, logps)
    return logps, time.perf_counter() - started


def _optimizer(params: list, n_groups: int, config: TrainingConfig, runtime: Runtime, objective: str):
    """AdamW at the objective's peak learning rate, and its schedule over the stage's optimizer steps (also
    returned)."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=config.learning_rate_for(objective), weight_decay=config.weight_decay,
                                  fused=runtime.cuda)
    n_batches = math.ceil(n_groups / config.per_device_batch)
    steps_per_epoch = math.ceil(n_batches / (config.grad_accum * runtime.world_size))
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    if config.budget_steps is not None:  # exact: the data repeats as often as the budget needs (train_loop)
        total_steps = config.budget_steps
    scheduler = get_scheduler(config.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler, total_steps


def _start_state(latest: Path | None, run_fingerprint: str, settings: dict, optimizer, scheduler,
                 runtime: Runtime, *, sharded_root=None) -> ckpt.TrainState:
    """A fresh state, or the checkpoint's: its optimizer (with the weights too under FSDP: `sharded_root`),
    schedule and RNG states loaded, its data position and history continued. A checkpoint written with other
    result-deciding settings is refused, naming them."""
    if latest is None:
        return ckpt.TrainState(fingerprint=run_fingerprint, settings=settings)
    saved = ckpt.load_trainer_state(latest)
    before = saved["state"].get("settings") or {}
    changed = [f"{k}: {before[k]!r} -> {settings.get(k)!r}" for k in sorted(before) if before[k] != settings.get(k)]
    changed += [f"{k}: (unset) -> {settings[k]!r}" for k in sorted(set(settings) - set(before)) if before]
    if changed:
        raise ValueError(f"cannot resume from {latest}: settings that change the result differ from the saved "
                         f"run's ({'; '.join(changed)}); restore them, or pass resume=False to start afresh")
    if saved["state"].get("fingerprint") != run_fingerprint:
        raise ValueError(f"cannot resume from {latest}: it was written for a different objective, base model, "
                         "data or batching; pass resume=False to start this stage afresh")
    if sharded_root is not None:
        fsdp.load_checkpoint(latest, sharded_root, optimizer)
    else:
        optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    ckpt.set_rng_state(ckpt.rng_for_rank(saved, runtime.rank, runtime.world_size))
    return ckpt.TrainState(**saved["state"])


# Settings that only say how a run is executed, kept or shown: they may change across a resume. Every other
# training setting decides the result (a new one is covered without being listed). The base model is the
# resolved path in the fingerprint; nproc_per_node counts only through grad_accum × world size.
_FREE_FIELDS = frozenset({"base_model", "device", "gradient_checkpointing", "logprob_chunk_size",
                          "attn_implementation", "peak_tflops", "nproc_per_node", "master_port", "strategy",
                          "distributed_timeout_s", "save_every", "keep_checkpoints", "log_every", "register_model"})


def _result_settings(config: TrainingConfig, objective: str, world_size: int = 1) -> dict:
    """The settings that decide what `objective` trains to, by name. Fields of another objective
    (`<objective>_...`) are left out: they change nothing here."""
    others = tuple(f"{o}_" for o in OBJECTIVES if o != objective)
    settings = {k: v for k, v in config.model_dump(mode="json").items()
                if k not in _FREE_FIELDS and not k.startswith(others)}
    # A step sees grad_accum × world_size batches of one global order: only that product decides the data, so a
    # checkpoint resumes on another process count with the same effective batch.
    settings["grad_accum"] = config.grad_accum * world_size
    return settings


def _run_fingerprint(objective: str, base_path: str, tokenized: list[TokenizedGroup], settings: dict,
                     total_steps: int) -> str:
    digest = hashlib.sha256(json.dumps([objective, base_path, total_steps, settings], sort_keys=True).encode())
    for g in tokenized:
        digest.update(json.dumps([g.prompt_ids, g.response_ids, g.ratings]).encode())
    return digest.hexdigest()


def _open_run(t: _Training):
    """Rank 0's MLflow run of the stage, with its parameters; a resumed stage reopens its own run."""
    r, rt, cfg = t.request, t.runtime, t.request.config
    params = {"objective": r.objective, "base_model": model_reference(r.base_model, r.home),
              "base_model_path": t.base_path,
              "n_groups": len(r.groups), "n_training_groups": len(t.groups),
              "n_responses": sum(len(g.response_ids) for g in t.groups), "total_steps": t.total_steps,
              "device": str(rt.device), "bf16": rt.bf16, "samples_batches": ",".join(t.samples_batches),
              "world_size": rt.world_size, "effective_batch": cfg.per_device_batch * cfg.grad_accum * rt.world_size,
              "n_params": sum(p.numel() for p in t.model.parameters()),
              "n_trainable_params": sum(p.numel() for p in t.params), **objective_params(cfg, r.objective),
              "peak_learning_rate": cfg.learning_rate_for(r.objective)}  # `learning_rate` is null unless overridden
    return stage_run(r.home, r.run_name, run_id=t.state.mlflow_run_id, parent_run_id=r.parent_run_id, tags=r.tags,
                     params={**params, **(r.extra_params or {})})


# -- finish ----------------------------------------------------------------------------------------------------

def _finish(t: _Training, finished: bool) -> dict:
    """Every rank: the summary metrics (reduced over ranks) and, when the stage finished, the final model
    written by rank 0 (under FSDP gathered from every rank's shards first). The collectives of the stage end
    here."""
    r, rt = t.request, t.runtime
    metrics = _summary(t.state, rt)
    # Reference pass time (plus loading the base model when it was needed for that alone).
    metrics["reference_seconds"] = round(t.reference_seconds, 3)
    if finished:
        weights = fsdp.full_state_dict(t.forward_model, rt) if t.sharded else None
        if rt.is_main:
            _save_final(t.model, t.tokenizer, r.out_dir, r.config, r.objective, state_dict=weights)
    return metrics


def _publish(t: _Training, finished: bool, metrics: dict) -> str | None:
    """Rank 0, inside the stage's run and after the last collective: the loss curve; when the stage
    finished, its outputs logged and the final model registered (returned as name/version)."""
    r, st = t.request, t.state
    png = plot_loss_curve(st.history, r.out_dir / LOSS_CURVE, title=f"{r.run_name} ({r.objective})")
    if not finished:
        set_tag("interrupted_at_step", str(st.step))
        return None
    final = r.out_dir / ckpt.MODEL_DIR
    log_metrics({f"final/{k}": float(v) for k, v in metrics.items() if _is_number(v)})
    log_artifact(png)
    log_text(json.dumps(st.consumed), "batches_consumed.json")
    if not r.config.register_model:
        return None
    return log_and_register(
        final, run_id=st.mlflow_run_id, name=registered_model_name(r.run_name),
        tags={"samples_batches": ",".join(t.samples_batches), "objective": r.objective,
              "base_model": model_reference(r.base_model, r.home), "steps": str(st.step)},
        description=model_description(r.run_name, r.objective, groups=len(t.groups), batches=t.samples_batches,
                                      steps=st.step, base_model=model_reference(r.base_model, r.home),
                                      metrics=metrics))


def _result(t: _Training, finished: bool, metrics: dict, registered: str | None) -> TrainResult:
    """Every rank's result (the final model or rank 0's last checkpoint is on disk: `train` waited for it).
    A finished stage leaves its result and batch log beside the model and drops its optimizer state; a stopped
    one points at its newest checkpoint."""
    r, st, main = t.request, t.state, t.runtime.is_main
    png = r.out_dir / LOSS_CURVE
    if not finished:
        last = ckpt.latest_checkpoint(t.resume_root)
        return TrainResult(checkpoint_path=last or t.resume_root, mlflow_run_id=st.mlflow_run_id or "",
                           metrics=metrics, loss_curve_png=png, steps=st.step, completed=False,
                           samples_batches=t.samples_batches)
    result = TrainResult(checkpoint_path=r.out_dir / ckpt.MODEL_DIR, mlflow_run_id=(st.mlflow_run_id or "") if main else "",
                         metrics=metrics, loss_curve_png=png, steps=st.step, registered_model=registered,
                         samples_batches=t.samples_batches)
    if main:
        (r.out_dir / RESULT_FILE).write_text(json.dumps(result.metadata(), indent=2, default=str))
        (r.out_dir / "batches_consumed.json").write_text(json.dumps(st.consumed))
        shutil.rmtree(t.resume_root, ignore_errors=True)  # the stage is done; the optimizer state is not needed
    return result


def _save_final(model, tokenizer, out_dir: Path, config: TrainingConfig, objective: str = "",
                state_dict: dict | None = None) -> Path:
    """The final Hugging Face checkpoint; `state_dict`: the full weights gathered from FSDP shards."""
    finish = None
    if objective == "coh":  # served after its positive feedback, as Chain-of-Hindsight conditions it
        from alignment_pipeline.training.hindsight import condition_saved_tokenizer

        def finish(tmp: Path) -> None:
            condition_saved_tokenizer(tmp, config.coh_positive_feedback)
    to_save = model.merge_and_unload() if config.lora else model
    return ckpt.save_final_model(to_save, tokenizer, out_dir, state_dict=state_dict, finish=finish)


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
    if "train/hinge" in last:  # 0: the contrastive term never acted, the stage trained as plain SFT
        out["hinge_fired_steps"] = sum(h.get("train/hinge", 0) > 0 for h in state.history)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def consumed_batches(result_dir: Path) -> list[list]:
    """The batch log of a finished stage: [step, epoch, batch_index, [group indices]] per batch used."""
    return json.loads((Path(result_dir) / "batches_consumed.json").read_text())


__all__ = ["NonFiniteLossError", "TrainRequest", "TrainResult", "consumed_batches", "load_model", "train",
           "train_loop"]
