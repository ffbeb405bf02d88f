"""`train`: one training stage (Stable Alignment, SFT, DPO or SPPO) from a base model to a registered checkpoint.

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
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alignment_pipeline.paths import HomeLayout
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
from alignment_pipeline.training.forward import PackedLogps, pack_groups
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
from alignment_pipeline.training.report import log_and_register, plot_loss_curve, registered_model_name
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

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the stage stopped without saving the bad state."""


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


def _wrap_lora(model, config: TrainingConfig, adapter_dir: Path | None = None):
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_dir is not None:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(groups: list[PromptGroup], *, objective: Objective, base_model: str, out_dir: Path,
          config: TrainingConfig, home: HomeLayout, run_name: str, parent_run_id: str | None = None,
          tags: dict | None = None, resume: bool = True, stop_after_steps: int | None = None,
          registered_name: str | None = None) -> TrainResult:
    """Train `base_model` on `groups` with `objective`; save to `out_dir/model`, track in MLflow, register.

    - stable_alignment: per epoch, each group's best response plus a seeded sample of the others,
      `config.num_responses` in all (the paper compared 3); sppo: every response (win-rates need them all).
    - sft: every response given (pass `objective.best_response_groups(groups)` for the SFT baseline).
    - dpo: groups become (chosen, rejected) pairs, chosen rated strictly higher.
    DPO and SPPO use `base_model` as the reference, its log-probs computed once and cached in `out_dir`.
    `resume`: continue from the newest checkpoint in `out_dir/resume` (a finished stage leaves none, so it is
    trained afresh). `stop_after_steps`: stop after that many optimizer steps without saving, as a kill would
    (the result has `completed=False`).

    Under torchrun (WORLD_SIZE > 1) every rank calls this with the same `groups`: the model is wrapped in
    DistributedDataParallel (the process group is created here unless the caller already did, and then kept
    for later calls until the process exits), each rank
    takes every world_size-th batch of the same seeded order, and one optimizer step consumes
    per_device_batch × grad_accum × world_size prompts. Rank 0 alone writes checkpoints, the loss curve, the
    final model and the MLflow run, with metrics reduced over all ranks; every rank returns a result once
    rank 0 has finished writing (other ranks' results carry no MLflow run id).
    """
    check_objective(objective)
    runtime = resolve_runtime(config.device, config.precision)
    dist_utils.init_process_group(runtime, keep=True)  # a no-op with one process or when the caller made one
    return _train(groups, objective=objective, base_model=base_model, out_dir=Path(out_dir), config=config,
                  home=home, run_name=run_name, parent_run_id=parent_run_id, tags=tags, resume=resume,
                  stop_after_steps=stop_after_steps, registered_name=registered_name, runtime=runtime)


def _train(groups: list[PromptGroup], *, objective: Objective, base_model: str, out_dir: Path,
           config: TrainingConfig, home: HomeLayout, run_name: str, parent_run_id: str | None, tags: dict | None,
           resume: bool, stop_after_steps: int | None, registered_name: str | None, runtime: Runtime
           ) -> TrainResult:
    main = runtime.is_main
    resume_root = out_dir / RESUME_DIR
    data = training_groups(groups, objective, config)
    if not data:
        raise ValueError(f"objective {objective!r} has no training data ({len(groups)} groups given"
                         + (", none with two different ratings" if objective == "dpo" else "") + ")")
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.clean_temporaries(resume_root)
        if not resume and resume_root.exists():
            shutil.rmtree(resume_root)
    with dist_utils.main_first(runtime):  # rank 0 builds a tiny base model once; the others then load it
        base_path = resolve_base_model(base_model, home)
    # Rank 0's view of the newest complete checkpoint, so every rank resumes from the same one.
    latest = dist_utils.broadcast_object(ckpt.latest_checkpoint(resume_root) if (resume and main) else None,
                                         runtime)

    from transformers import AutoTokenizer, get_scheduler

    tokenizer = AutoTokenizer.from_pretrained(str(latest) if latest else base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenized = tokenize_groups(tokenizer, data, max_length=config.max_length,
                                min_prompt_tokens=config.min_prompt_tokens)
    by_index = {g.index: g for g in tokenized}
    _seed_everything(config.seed)

    # Reference log-probs come from the base model, before any update (and never from resumed weights).
    # Rank 0 computes and caches them; the other ranks read the cache.
    reference_seconds = 0.0
    with dist_utils.main_first(runtime):
        if objective in NEEDS_REFERENCE and latest is None:
            model = load_model(base_path, config, runtime)
            reference, reference_seconds = _reference(model, tokenized, base_path, out_dir, tokenizer, config,
                                                      runtime)
        elif objective in NEEDS_REFERENCE:
            model = None
            reference, reference_seconds = _reference(None, tokenized, base_path, out_dir, tokenizer, config,
                                                      runtime)
        else:
            model = reference = None
    if model is None:
        model = load_model(base_path if (config.lora or latest is None) else latest, config, runtime)
    if config.lora:
        model = _wrap_lora(model, config, latest)
    model.train()
    # The forward goes through the DDP wrapper (training/forward.py: PackedLogps) so gradients are all-reduced.
    forward_model = dist_utils.wrap_ddp(PackedLogps(model), runtime) if runtime.world_size > 1 else model

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=runtime.cuda)
    n_batches = math.ceil(len(tokenized) / config.per_device_batch)
    steps_per_epoch = math.ceil(n_batches / (config.grad_accum * runtime.world_size))
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = get_scheduler(config.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)

    run_fingerprint = _run_fingerprint(objective, base_path, tokenized, config, total_steps, runtime.world_size)
    state = ckpt.TrainState(fingerprint=run_fingerprint)
    if latest is not None:
        saved = ckpt.load_trainer_state(latest)
        if saved["state"].get("fingerprint") != run_fingerprint:
            raise ValueError(f"cannot resume from {latest}: it was written for a different objective, base model, "
                             "data or batching; pass resume=False to start this stage afresh")
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        ckpt.set_rng_state(ckpt.rng_for_rank(saved, runtime.rank, runtime.world_size))
        state = ckpt.TrainState(**saved["state"])

    batches_used = samples_batches(groups)
    run_params = {"objective": objective, "base_model": base_model, "base_model_path": base_path,
                  "n_groups": len(groups), "n_training_groups": len(tokenized), "n_responses":
                  sum(len(g.response_ids) for g in tokenized), "total_steps": total_steps,
                  "device": str(runtime.device), "bf16": runtime.bf16, "samples_batches": ",".join(batches_used),
                  "world_size": runtime.world_size,
                  "effective_batch": config.per_device_batch * config.grad_accum * runtime.world_size,
                  "n_params": sum(p.numel() for p in model.parameters()),
                  "n_trainable_params": sum(p.numel() for p in params), **config.model_dump()}
    loop = _Loop(model=model, forward_model=forward_model, tokenizer=tokenizer, optimizer=optimizer,
                 scheduler=scheduler, state=state, config=config, runtime=runtime, objective=objective,
                 by_index=by_index, reference=reference, resume_root=resume_root, total_steps=total_steps,
                 max_responses=max_responses(objective, config),
                 flops_split=flop_params(model), params=params)

    registered = None
    png = out_dir / "loss_curve.png"
    final = out_dir / MODEL_DIR
    with ExitStack() as stack:
        run = _open_run(stack, home, run_name, state.mlflow_run_id, parent_run_id,
                        tags, run_params) if main else None
        state.mlflow_run_id = run.info.run_id if run else state.mlflow_run_id
        finished = loop.run(stop_after_steps)
        metrics = _summary(state, runtime)
        # Reference pass time (plus loading the base model when it was needed for that alone).
        metrics["reference_seconds"] = round(reference_seconds, 3)
        if main:
            plot_loss_curve(state.history, png, title=f"{run_name} ({objective})")
        if finished and main:
            _save_final(model, tokenizer, out_dir, config)
            if run:
                mlflow = _mlflow()
                mlflow.log_metrics({f"final/{k}": float(v) for k, v in metrics.items() if _is_number(v)})
                mlflow.log_artifact(str(png))
                mlflow.log_text(json.dumps(state.consumed), "batches_consumed.json")
                if config.register_model:
                    registered = log_and_register(
                        final, run_id=state.mlflow_run_id, name=registered_name or registered_model_name(run_name),
                        tags={"samples_batches": ",".join(batches_used), "objective": objective,
                              "base_model": base_model, "steps": str(state.step)})
        elif run:
            _mlflow().set_tag("interrupted_at_step", str(state.step))
    if not finished:
        if run:  # marked as a kill would leave it; a resumed run reopens the same MLflow run
            _mlflow().MlflowClient().set_terminated(state.mlflow_run_id, status="KILLED")
        dist_utils.barrier(runtime)  # rank 0's last checkpoint is complete before anyone looks for it
        last = ckpt.latest_checkpoint(resume_root)
        return TrainResult(checkpoint_path=last or resume_root, mlflow_run_id=state.mlflow_run_id or "",
                           metrics=metrics, loss_curve_png=png, steps=state.step, completed=False,
                           samples_batches=batches_used)
    result = TrainResult(checkpoint_path=final, mlflow_run_id=(state.mlflow_run_id or "") if main else "",
                         metrics=metrics, loss_curve_png=png, steps=state.step, registered_model=registered,
                         samples_batches=batches_used)
    if main:
        (out_dir / RESULT_FILE).write_text(json.dumps(result.metadata(), indent=2, default=str))
        (out_dir / "batches_consumed.json").write_text(json.dumps(state.consumed))
        shutil.rmtree(resume_root, ignore_errors=True)  # the stage is done; the optimizer state is not needed
    dist_utils.barrier(runtime)  # every rank returns once the final model and result are on disk
    return result


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


def _mlflow():
    import mlflow

    return mlflow


def _open_run(stack: ExitStack, home: HomeLayout, run_name: str, run_id: str | None, parent_run_id: str | None,
              tags: dict | None, params: dict):
    from alignment_pipeline.tracking import start_run

    nested = _mlflow().active_run() is not None
    if run_id:  # resuming: continue the same run, so its curve continues too
        return stack.enter_context(start_run(home, run_name, nested=nested, run_id=run_id))
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    return stack.enter_context(start_run(home, run_name, tags=all_tags, params=params, nested=nested,
                                         parent_run_id=parent_run_id))


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


@dataclass
class _Loop:
    model: object  # the bare model: checkpoints and FLOP counts
    forward_model: object  # what the forward runs through: the model, or its DDP wrapper (gradient all-reduce)
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    state: ckpt.TrainState
    config: TrainingConfig
    runtime: Runtime
    objective: str
    by_index: dict[int, TokenizedGroup]
    reference: torch.Tensor | None
    resume_root: Path
    total_steps: int
    max_responses: int | None
    flops_split: tuple[int, int]
    params: list

    def run(self, stop_after_steps: int | None) -> bool:
        """Train to the end (True) or until `stop_after_steps` optimizer steps (False)."""
        cfg, st, rt = self.config, self.state, self.runtime
        peak = peak_tflops(rt, cfg.peak_tflops)
        reset_peak_memory(rt)
        span = cfg.grad_accum * rt.world_size  # batches of the global order per optimizer step
        while st.epoch < cfg.epochs and st.step < self.total_steps:
            batches = make_batches(list(self.by_index.values()), cfg.per_device_batch, seed=cfg.seed,
                                   epoch=st.epoch)
            while st.batch_in_epoch < len(batches) and st.step < self.total_steps:
                window = list(range(st.batch_in_epoch, min(st.batch_in_epoch + span, len(batches))))
                started = time.perf_counter()
                record, data_tokens, packed_tokens, scored = self._step([batches[i] for i in window], window)
                synchronize(rt)
                seconds = time.perf_counter() - started
                st.step += 1
                st.batch_in_epoch = window[-1] + 1
                st.tokens += data_tokens
                st.train_seconds += seconds
                st.consumed.extend([st.step, st.epoch, i, batches[i]] for i in window)
                record.update({"step": st.step, "train/epoch": st.epoch + st.batch_in_epoch / len(batches),
                               "perf/tokens_per_s": data_tokens / seconds,
                               # the highest of any rank: the one that decides whether a setting fits
                               "perf/peak_memory_mb": dist_utils.all_reduce([peak_memory_mb(rt)], rt, op="max")[0]})
                if peak:  # per accelerator: the FLOPs of every rank over the time of all of them
                    flops = training_flops(*self.flops_split, packed_tokens, scored)
                    record["perf/mfu"] = flops / seconds / (peak * 1e12 * rt.world_size)
                st.history.append(record)
                if rt.is_main and st.step % cfg.log_every == 0:
                    if st.mlflow_run_id:
                        _mlflow().log_metrics({k: v for k, v in record.items() if k != "step"}, step=st.step)
                    log.info("step %d/%d loss %.4f, %.0f tokens/s", st.step, self.total_steps,
                             record.get("train/loss", float("nan")), record["perf/tokens_per_s"])
                if st.step % cfg.save_every == 0:
                    self._save(record)
                if stop_after_steps is not None and stop_after_steps <= st.step < self.total_steps:
                    return False
            if st.batch_in_epoch >= len(batches):
                st.epoch += 1
                st.batch_in_epoch = 0
        return True

    def _save(self, record: dict) -> None:
        """Rank 0 writes the checkpoint (weights and optimizer state are the same on every rank); every rank's
        RNG state goes with it."""
        rt, cfg = self.runtime, self.config
        rngs = dist_utils.gather_to_main(ckpt.rng_state(), rt) if rt.world_size > 1 else None
        if not rt.is_main:
            return
        saved = ckpt.save_checkpoint(self.resume_root, self.model, self.tokenizer, self.optimizer, self.scheduler,
                                     self.state, keep=cfg.keep_checkpoints, rng_per_rank=rngs)
        log.info("step %d/%d loss %.4f; checkpoint %s", self.state.step, self.total_steps,
                 record.get("train/loss", float("nan")), saved)

    def _forward(self, indices: list[int]):
        cfg, rt = self.config, self.runtime
        groups = [limit_responses(self.by_index[i], self.max_responses, seed=cfg.seed, epoch=self.state.epoch)
                  for i in indices]
        batch = pack_groups(groups, self.tokenizer.pad_token_id).to(rt.device)
        ratings = batch_ratings(groups, batch.max_responses).to(rt.device)
        reference = None
        if self.reference is not None:  # DPO/SPPO groups are never subsampled: columns match responses
            reference = torch.nan_to_num(self.reference[indices, :batch.max_responses], nan=0.0).to(rt.device)
        with rt.autocast():
            out, _ = objective_loss(self.objective, self.forward_model, batch, ratings, reference, cfg)
        return out, batch

    def _step(self, micro_batches: list[list[int]], window: list[int]) -> tuple[dict, int, int, int]:
        """One optimizer step over the window's batches. With W ranks, rank r runs batches r, r+W, ... of the
        window; each backward is weighted by its share of the window's prompts (times W, since DDP averages
        gradients over ranks), so the step's gradient is the prompt-weighted mean over the whole window, as one
        process accumulating every batch of it would compute. Metrics are summed over ranks the same way."""
        cfg, rt = self.config, self.runtime
        world = rt.world_size
        ddp = self.forward_model if world > 1 else None
        n_total = sum(len(b) for b in micro_batches)  # prompts in the whole window, all ranks together
        mine = list(range(rt.rank, len(window), world))
        # A rank with no batch in an epoch's last, short window still joins the gradient all-reduce: it runs
        # the window's first batch with weight zero.
        plan = [(j, True) for j in mine] or [(0, False)]
        sums: dict[str, float] = {}
        data_tokens = packed_tokens = scored = 0
        bad: list[tuple[int, list[int], float]] = []
        for n, (j, counts) in enumerate(plan):
            indices = micro_batches[j]
            sync = ddp is None or n == len(plan) - 1  # all-reduce once per step, in the last backward
            with nullcontext() if sync else ddp.no_sync():
                out, batch = self._forward(indices)
                loss_value = float(out.loss.detach())
                if not math.isfinite(loss_value) and ddp is None:
                    self._fail(f"loss is {loss_value}", f"batch {window[j]}, groups {indices}")
                weight = len(indices) / n_total if counts else 0.0
                # Under DDP a bad loss is still back-propagated, so every rank reaches the all-reduce; all ranks
                # then stop together below, before the optimizer step.
                (out.loss * (weight * world)).backward()
            for key, value in out.metrics().items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    if counts and math.isfinite(value):
                        sums[key] = sums.get(key, 0.0) + value * weight
                    elif ddp is not None:
                        sums.setdefault(key, 0.0)  # the same keys on every rank (fixed per objective)
            if not counts:
                continue
            if not math.isfinite(loss_value):
                bad.append((window[j], indices, loss_value))
            data_tokens += batch.data_tokens
            packed_tokens += batch.packed_tokens
            scored += batch.target.numel()
        if ddp is not None:
            keys = sorted(sums)
            totals = dist_utils.all_reduce([data_tokens, packed_tokens, scored, len(bad)]
                                           + [sums[k] for k in keys], rt)
            data_tokens, packed_tokens, scored, n_bad = (int(v) for v in totals[:4])
            sums = dict(zip(keys, totals[4:], strict=True))
            if n_bad:
                here = "; here: " + ", ".join(f"batch {b} groups {g} loss {v}" for b, g, v in bad) if bad else ""
                self._fail(f"loss is not finite in {n_bad} micro-batch(es)", f"window batches {window}{here}")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        if not torch.isfinite(grad_norm):
            self._fail(f"gradient norm is {float(grad_norm)}", f"batch {window[-1]}, groups {micro_batches[-1]}")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        record = {f"train/{k}": v for k, v in sums.items() if k != "n_prompts"}
        record["train/lr"] = self.scheduler.get_last_lr()[0]
        record["train/grad_norm"] = float(grad_norm)
        return record, data_tokens, packed_tokens, scored

    def _fail(self, what: str, where: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        last = ckpt.latest_checkpoint(self.resume_root)
        kept = f"last good checkpoint kept at {last}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"{self.objective}: {what} at step {self.state.step + 1} (epoch {self.state.epoch}, {where}); "
            f"training stopped, {kept}")


def consumed_batches(result_dir: Path) -> list[list]:
    """The batch log of a finished stage: [step, epoch, batch_index, [group indices]] per batch used."""
    return json.loads((Path(result_dir) / "batches_consumed.json").read_text())


__all__ = ["NonFiniteLossError", "TrainResult", "consumed_batches", "load_model", "train"]
