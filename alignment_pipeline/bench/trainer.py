"""Trainer benchmark: our DPO against TRL's DPOTrainer on the same model and pairwise data, plus our Stable
Alignment loss with K = 3 responses per prompt, side by side in one run.

Fairness, as a competent TRL user would set it up:
- the same model weights (a named model such as the packaged SmolLM2-135M-Instruct, or a random-init shape),
  loaded in float32 master weights with the same attention implementation on both sides;
- the same precision (bf16 autocast on CUDA, fp32 on CPU), the same pairs, rendered in the same prompt format,
  the same pairs per optimizer step, learning rate, gradient-checkpointing setting and number of steps;
- TRL with `precompute_ref_log_probs=True` (no second model resident), its reference pass timed and counted in
  its total as ours is, and its length-grouped sampler (`train_sampling_strategy="group_by_length"`; ours
  groups by length always);
- every contender in a fresh subprocess, so memory figures and caches do not leak between them.

Step time: wall seconds from one optimizer step's end to the next (data collation included, logging and
saving excluded), CUDA synchronised; the first `warmup_steps` steps (allocator growth, kernel selection,
TRL's Triton compilation on CUDA) are dropped. tokens/s = data tokens of the steady-state steps / their
seconds, where a pair's data tokens are its prompt once plus both responses, each side counting the tokens it
actually fed (they agree when both tokenise alike; both totals are printed). Total = reference pass + every
step. Peak memory: on CUDA `torch.cuda.max_memory_allocated` over the whole subprocess; on CPU the growth of
the subprocess's resident-set high-water mark (VmHWM, reset after imports) over its resident size before the
model was loaded. MFU (CUDA): 6 × (parameters outside the input embedding) × data tokens/s / the device's
peak bf16 FLOP/s: the same useful-work count for both sides (work a trainer repeats, such as TRL's second pass
over the prompt, is not credited).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CONTENDERS = ("ours_dpo", "trl_dpo", "ours_stable_alignment")
TOY = "tiny"  # BenchSpec.model value: a random-init model of the spec's shape
ARCHES = ("llama", "qwen2")


@dataclass(frozen=True)
class BenchSpec:
    device: str = "auto"
    model: str = TOY  # "tiny": random init from the shape below; else a model name (packaged, directory, hub id)
    arch: str = "llama"  # random-init architecture: llama | qwen2
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 344
    vocab: int = 32000
    tie_embeddings: bool = False
    prompt_chars: int = 160  # filler characters in each prompt
    response_chars: tuple[int, int] = (80, 160)
    prompts_per_batch: int = 8  # = pairs per micro-batch for DPO
    grad_accum: int = 1
    warmup_steps: int = 1  # dropped from the steady-state figures
    steps: int = 3  # steady-state steps measured
    max_length: int = 512
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    learning_rate: float = 1e-4
    strategy: str | None = None  # training.strategy for our contenders (e.g. fsdp); None: the config default
    world_size: int = 1  # processes our contenders run on (under torchrun); each step takes a batch from each
    seed: int = 0

    @property
    def n_prompts(self) -> int:
        """Exactly enough prompts for warmup + steady steps of full batches."""
        return (self.warmup_steps + self.steps) * self.prompts_per_batch * self.grad_accum * self.world_size

    @classmethod
    def toy(cls, device: str = "auto", **overrides) -> BenchSpec:
        """A random-init Llama of 9M parameters with a 32k vocabulary (the byte-level tokenizer uses its first
        384 ids; the LM head still costs what a 32k head costs)."""
        return cls(**{"device": device, "steps": 4, **overrides})

    @classmethod
    def real_cpu(cls, model: str = "smollm2-135m-instruct", **overrides) -> BenchSpec:
        """The packaged SmolLM2-135M-Instruct (30 layers, vocab 49k) at a size 2 CPU cores get through in
        minutes: 2 pairs per step, prompts of ~110 tokens (chat template included), responses of ~30-60."""
        base = dict(device="cpu", model=model, prompt_chars=120, response_chars=(60, 120), prompts_per_batch=2,
                    warmup_steps=1, steps=4, max_length=512, learning_rate=1e-5)
        return cls(**{**base, **overrides})

    @classmethod
    def gpu(cls, **overrides) -> BenchSpec:
        """Qwen2-0.5B's shape at random init (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, vocab
        151,936, tied embeddings: 0.49B parameters), sequences up to 1024 tokens, 8 pairs per step, 10 warm-up
        and 100 steady-state steps."""
        base = dict(device="cuda", arch="qwen2", hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864,
                    vocab=151936, tie_embeddings=True, prompt_chars=448, response_chars=(256, 512),
                    prompts_per_batch=8, warmup_steps=10, steps=100, max_length=1024, learning_rate=1e-5)
        return cls(**{**base, **overrides})

    @classmethod
    def from_json(cls, text: str) -> BenchSpec:
        d = json.loads(text)
        d["response_chars"] = tuple(d["response_chars"])
        return cls(**d)

    def describe(self) -> str:
        shape = (f"random-init {self.arch} (hidden {self.hidden}, {self.layers} layers, vocab {self.vocab})"
                 if self.model == TOY else self.model)
        return (f"{shape}; {self.prompts_per_batch} pairs (DPO) / prompts (SA) per micro-batch x {self.grad_accum} "
                f"accumulation, {self.n_prompts} prompts, max length {self.max_length}, attention "
                f"{self.attn_implementation}, gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}"
                f"; {self.warmup_steps} warm-up step(s) dropped, {self.steps} steady-state steps")


@dataclass(frozen=True)
class ContenderResult:
    name: str
    step_seconds: list[float]  # every optimizer step, warm-up included
    step_tokens: list[int]  # data tokens of each step
    warmup_steps: int
    reference_seconds: float  # the reference log-prob pass (0 for objectives without one)
    peak_memory_mb: float
    memory_method: str
    mfu: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.step_seconds)

    @property
    def steady_seconds(self) -> list[float]:
        return self.step_seconds[self.warmup_steps:]

    @property
    def step_time(self) -> float:
        """Mean steady-state step time."""
        s = self.steady_seconds
        return sum(s) / len(s) if s else float("nan")

    @property
    def tokens(self) -> int:
        return sum(self.step_tokens)

    @property
    def tokens_per_s(self) -> float:
        s = sum(self.steady_seconds)
        return sum(self.step_tokens[self.warmup_steps:]) / s if s > 0 else 0.0

    @property
    def total_seconds(self) -> float:
        return self.reference_seconds + sum(self.step_seconds)

    def as_dict(self) -> dict:
        s = self.steady_seconds
        return {**asdict(self), "steps": self.steps, "tokens": self.tokens, "tokens_per_s": self.tokens_per_s,
                "step_s_mean": self.step_time, "step_s_median": statistics.median(s) if s else None,
                "step_s_stdev": statistics.stdev(s) if len(s) > 1 else None, "total_seconds": self.total_seconds}


@dataclass(frozen=True)
class TrainerBench:
    spec: BenchSpec
    device: str
    n_params: int
    results: list[ContenderResult]
    repeats: int = 1

    def result(self, name: str) -> ContenderResult | None:
        return next((r for r in self.results if r.name == name), None)

    def ratios(self) -> dict | None:
        """ours_dpo / trl_dpo for each figure; None without TRL."""
        ours, trl = self.result("ours_dpo"), self.result("trl_dpo")
        if not (ours and trl and trl.tokens_per_s and trl.step_time and trl.peak_memory_mb > 0):
            return None
        return {"tokens_per_s": ours.tokens_per_s / trl.tokens_per_s, "step_time": ours.step_time / trl.step_time,
                "peak_memory": ours.peak_memory_mb / trl.peak_memory_mb,
                "total_seconds": ours.total_seconds / trl.total_seconds}

    @property
    def tokens_per_s_ratio(self) -> float | None:
        r = self.ratios()
        return r["tokens_per_s"] if r else None

    @property
    def peak_memory_ratio(self) -> float | None:
        r = self.ratios()
        return r["peak_memory"] if r else None

    def metadata(self) -> dict:
        return {"device": self.device, "n_params": self.n_params, "spec": asdict(self.spec), "repeats": self.repeats,
                "results": [r.as_dict() for r in self.results], "ratios_ours_dpo_over_trl_dpo": self.ratios()}

    def lines(self) -> list[str]:
        out = [f"trainer benchmark on {self.device}: {self.n_params / 1e6:.1f}M params, {self.spec.describe()}",
               f"{'contender':<22} {'tokens/s':>9} {'step s':>8} {'total s':>8} {'ref s':>7} {'peak MiB':>9} "
               f"{'tokens':>7} {'MFU':>6}"]
        for r in self.results:
            mfu = f"{r.mfu:.1%}" if r.mfu is not None else "-"
            out.append(f"{r.name:<22} {r.tokens_per_s:>9.0f} {r.step_time:>8.3f} {r.total_seconds:>8.2f} "
                       f"{r.reference_seconds:>7.2f} {r.peak_memory_mb:>9.1f} {r.tokens:>7} {mfu:>6}")
        if self.results:
            best = f"; best of {self.repeats} runs each" if self.repeats > 1 else ""
            out.append(f"peak memory: {self.results[0].memory_method}{best}")
        ratios = self.ratios()
        if ratios:
            out.append(f"ours/TRL: tokens/s {ratios['tokens_per_s']:.2f}x, step time {ratios['step_time']:.2f}x, "
                       f"total {ratios['total_seconds']:.2f}x, peak memory {ratios['peak_memory']:.2f}x")
        else:
            out.append("ours/TRL: n/a (no TRL comparison)")
        return out


def bench_trainer(*, compare_trl: bool = True, spec: BenchSpec | None = None, models_dir: str | Path | None = None,
                  repeats: int = 1, timeout_s: float = 1800.0, contenders: tuple[str, ...] = CONTENDERS,
                  launcher: list[str] | None = None) -> TrainerBench:
    """Run every contender in its own subprocess (`repeats` times, contenders interleaved, keeping each one's
    fastest run: on a shared machine the slower runs measure the neighbours) and collect the figures.
    A named model is resolved (packaged models built) under `models_dir` once, before any timing. `launcher`
    replaces `python` in front of `-m alignment_pipeline.bench.trainer` (e.g. a torchrun command line)."""
    spec = spec or BenchSpec.toy()
    names = [n for n in contenders if compare_trl or n != "trl_dpo"]
    best: dict[str, ContenderResult] = {}
    n_params, dev = 0, spec.device
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        model_dir = _prepare_model(spec, Path(tmp) / "model", models_dir)
        for _ in range(max(1, repeats)):
            for name in names:
                payload = _run_contender(name, spec, model_dir, tmp, timeout_s, launcher)
                n_params, dev = payload.pop("n_params"), payload.pop("device")
                result = ContenderResult(**payload)
                if name not in best or result.tokens_per_s > best[name].tokens_per_s:
                    best[name] = result
    return TrainerBench(spec=spec, device=dev, n_params=n_params, results=[best[n] for n in names],
                        repeats=max(1, repeats))


def _prepare_model(spec: BenchSpec, out: Path, models_dir: str | Path | None) -> Path:
    if spec.model == TOY:
        return _build_model(spec, out)
    from alignment_pipeline.llm.models import resolve_model_path

    if models_dir is None and not Path(spec.model).is_dir():
        raise ValueError(f"model {spec.model!r} needs a models directory to be resolved in")
    return Path(resolve_model_path(spec.model, models_dir or "."))


def _run_contender(name: str, spec: BenchSpec, model_dir: Path, tmp: str, timeout_s: float,
                   launcher: list[str] | None) -> dict:
    # A fresh run directory each time: nothing (reference log-probs included) carries over between runs.
    run_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=tmp)
    command = [*(launcher or [sys.executable]), "-m", "alignment_pipeline.bench.trainer", name,
               json.dumps(asdict(spec)), str(model_dir), run_dir]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"})
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"benchmark contender {name} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line)


# -- inside a contender's subprocess ------------------------------------------------------------------

def _rss_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _build_model(spec: BenchSpec, out: Path) -> Path:
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if spec.arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, got {spec.arch!r}")
    if (out / "config.json").exists():
        return out
    tok = ByT5Tokenizer()
    torch.manual_seed(spec.seed)
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if spec.arch == "llama" else (Qwen2Config,
                                                                                          Qwen2ForCausalLM)
    config = config_cls(vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                        num_key_value_heads=spec.kv_heads, max_position_embeddings=4096,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                        tie_word_embeddings=spec.tie_embeddings)
    model = model_cls(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _data(spec: BenchSpec):
    from alignment_pipeline.training.objectives import preference_pairs
    from alignment_pipeline.training.synthetic import letter_groups

    lo, hi = spec.response_chars
    groups = letter_groups(spec.n_prompts, seed=spec.seed, responses=3, min_len=lo, max_len=hi,
                           filler_len=spec.prompt_chars, batch="bench")
    pairs = preference_pairs(groups, "best_vs_worst")  # one pair per prompt: same prompts for DPO and K = 3
    return groups, pairs


def _training_config(spec: BenchSpec):
    from alignment_pipeline.training.config import TrainingConfig

    extra = {"strategy": spec.strategy} if spec.strategy else {}
    return TrainingConfig(learning_rate=spec.learning_rate, epochs=1, per_device_batch=spec.prompts_per_batch,
                          grad_accum=spec.grad_accum, max_length=spec.max_length, margin=1.0, warmup_ratio=0.0,
                          lr_scheduler="constant_with_warmup", save_every=10**9, register_model=False,
                          gradient_checkpointing=spec.gradient_checkpointing, device=spec.device, seed=spec.seed,
                          log_every=10**9, attn_implementation=spec.attn_implementation, **extra)


def _peak(device, baseline_kib: int | None, hwm_reset: bool) -> tuple[float, str]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated (whole run)"
    hwm = _rss_kib("VmHWM")
    if hwm is not None and baseline_kib is not None and hwm_reset:
        return (hwm - baseline_kib) / 1024, "CPU resident-set high-water (VmHWM) growth over the pre-model RSS"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak - (baseline_kib or 0)) / 1024, "CPU ru_maxrss growth over the pre-model RSS"


def _run_ours(name: str, spec: BenchSpec, model_dir: Path, tmp: Path) -> dict:
    from alignment_pipeline.paths import HomeLayout
    from alignment_pipeline.training import trainer as trainer_module
    from alignment_pipeline.training.trainer import TrainRequest, train

    # The trainer times each step itself (optimizer step included, synchronised, logging and saving excluded)
    # and hands the seconds and the step's data tokens to `step_record`: read them there.
    steps: list[tuple[float, int]] = []
    record = trainer_module._Training.step_record

    def recording(self, sums, grad_norm, seconds, epoch):
        steps.append((seconds, int(sums.data_tokens)))
        return record(self, sums, grad_norm, seconds, epoch)

    trainer_module._Training.step_record = recording
    groups, pairs = _data(spec)
    objective, data = ("dpo", pairs) if name == "ours_dpo" else ("stable_alignment", groups)
    result = train(TrainRequest(data, objective=objective, base_model=str(model_dir), out_dir=tmp / name,
                                config=_training_config(spec), home=HomeLayout(tmp / f"home-{name}"),
                                run_name=f"bench-{name}", resume=False))
    m = result.metrics
    if objective == "dpo" and not m.get("reference_seconds"):
        raise RuntimeError("DPO reference log-probs came from a cache; the timing would leave their cost out")
    return {"step_seconds": [s for s, _ in steps], "step_tokens": [t for _, t in steps],
            "reference_seconds": float(m.get("reference_seconds", 0.0)), "extra": {"loss": m.get("loss")}}


def _run_trl(spec: BenchSpec, model_dir: Path, tmp: Path, device) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from alignment_pipeline.llm.prompt_format import prompt_format

    cuda = device.type == "cuda"

    class TimedDPOTrainer(DPOTrainer):
        """DPOTrainer with its reference precompute timed and each micro-batch's data tokens counted: the
        prompt once (from the chosen rows) plus both completions, as ours counts them."""

        reference_seconds = 0.0
        pending_tokens = 0

        def _precompute_ref_logps(self, dataset, name, batch_size):
            started = time.perf_counter()
            try:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            finally:
                if cuda:
                    torch.cuda.synchronize(device)
                TimedDPOTrainer.reference_seconds += time.perf_counter() - started

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "length" not in self._signature_columns:  # kept for the length-grouped sampler
                self._signature_columns = [*self._signature_columns, "length"]

        def training_step(self, model, inputs, *args, **kwargs):
            chosen_mask, _ = inputs["attention_mask"].chunk(2, dim=0)
            _, rejected_completion = inputs["completion_mask"].chunk(2, dim=0)
            TimedDPOTrainer.pending_tokens += int(chosen_mask.sum()) + int(rejected_completion.sum())
            return super().training_step(model, inputs, *args, **kwargs)

    steps: list[tuple[float, int]] = []

    class StepTimer(TrainerCallback):
        last = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            StepTimer.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            steps.append((now - StepTimer.last, TimedDPOTrainer.pending_tokens))
            TimedDPOTrainer.pending_tokens = 0
            StepTimer.last = now

    _, pairs = _data(spec)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                 attn_implementation=spec.attn_implementation)
    fmt = prompt_format(tok)
    dataset = Dataset.from_dict({"prompt": [fmt.render(p.prompt) for p in pairs],
                                 "chosen": [p.responses[0].strip() for p in pairs],
                                 "rejected": [p.responses[1].strip() for p in pairs]})
    args = DPOConfig(output_dir=str(tmp / "trl"), per_device_train_batch_size=spec.prompts_per_batch,
                     gradient_accumulation_steps=spec.grad_accum, max_length=spec.max_length,
                     learning_rate=spec.learning_rate, lr_scheduler_type="constant", warmup_steps=0, num_train_epochs=1,
                     logging_steps=10**9, save_strategy="no", report_to="none", use_cpu=not cuda, bf16=cuda,
                     tf32=cuda or None, gradient_checkpointing=spec.gradient_checkpointing, seed=spec.seed, beta=0.1,
                     dataloader_num_workers=0, disable_tqdm=True, precompute_ref_log_probs=True,
                     train_sampling_strategy="group_by_length")
    trainer = TimedDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                              callbacks=[StepTimer()])
    # The length-grouped sampler reads a "length" column: a pair's longer row, from TRL's own tokenisation.
    train = trainer.train_dataset
    trainer.train_dataset = train.add_column("length", [
        len(p) + max(len(c), len(r)) for p, c, r in zip(train["prompt_ids"], train["chosen_ids"], train["rejected_ids"],
                                                        strict=True)])
    if not TimedDPOTrainer.reference_seconds:
        raise RuntimeError("TRL's reference log-probs were not computed in this run; its total would leave them out")
    out = trainer.train()
    return {"step_seconds": [s for s, _ in steps], "step_tokens": [t for _, t in steps],
            "reference_seconds": TimedDPOTrainer.reference_seconds,
            "extra": {"loss": float(out.metrics.get("train_loss", float("nan")))}}


def _mfu(model_dir: Path, device, figures: dict, warmup: int) -> float | None:
    """Useful-work MFU on CUDA (see the module doc); None elsewhere or for an unknown device."""
    from alignment_pipeline.training.runtime import Runtime, peak_tflops

    if device.type != "cuda":
        return None
    peak = peak_tflops(Runtime(device=device, bf16=True, rank=0, world_size=1), None)
    if not peak:
        return None
    model = _meta_model(model_dir)
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if model.config.tie_word_embeddings:  # the tied matrix also serves as the LM head: count it once
        params += model.get_input_embeddings().weight.numel()
    seconds = sum(figures["step_seconds"][warmup:])
    tokens = sum(figures["step_tokens"][warmup:])
    gpus = int(os.environ.get("WORLD_SIZE", "1"))  # under torchrun the tokens are those of every rank
    return 6.0 * params * tokens / seconds / (peak * 1e12 * gpus) if seconds > 0 else None


def _contender_main(name: str, spec_json: str, model_dir: str, run_dir: str) -> None:
    import torch

    from alignment_pipeline.devices import resolve_device

    spec = BenchSpec.from_json(spec_json)
    device = resolve_device(spec.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:  # under torchrun: this rank's GPU
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    tmp = Path(run_dir)
    # Every contender imports the same libraries before the memory baseline, so import-time allocations
    # count for none of them.
    import gc

    import datasets  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import mlflow  # noqa: F401
    import trl  # noqa: F401

    import alignment_pipeline.training.trainer  # noqa: F401

    gc.collect()
    hwm_reset = _reset_hwm()
    baseline = _rss_kib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    if name == "trl_dpo":
        figures = _run_trl(spec, Path(model_dir), tmp, device)
    elif name in ("ours_dpo", "ours_stable_alignment"):
        figures = _run_ours(name, spec, Path(model_dir), tmp)
    else:
        raise SystemExit(f"unknown contender {name!r}; choose one of {', '.join(CONTENDERS)}")
    peak, method = _peak(device, baseline, hwm_reset)
    figures["extra"]["wall_s"] = round(time.perf_counter() - started, 3)
    if len(figures["step_seconds"]) != spec.warmup_steps + spec.steps:
        raise RuntimeError(f"{name} ran {len(figures['step_seconds'])} optimizer steps, expected "
                           f"{spec.warmup_steps} warm-up + {spec.steps}")
    n_params = sum(p.numel() for p in _meta_model(Path(model_dir)).parameters())
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print(json.dumps({"name": name, **figures, "warmup_steps": spec.warmup_steps, "peak_memory_mb": peak,
                      "memory_method": method, "mfu": _mfu(Path(model_dir), device, figures, spec.warmup_steps),
                      "n_params": n_params,
                      "device": str(device) + (f" ({torch.cuda.get_device_name(device)})"
                                               if device.type == "cuda" else f" ({os.cpu_count()} CPU cores)")}))


def _meta_model(model_dir: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)))


if __name__ == "__main__":
    _contender_main(*sys.argv[1:5])
