"""Trainer benchmark: our DPO against TRL's DPOTrainer on the same model and pairwise data, plus our Stable
Alignment loss with K = 3 responses per prompt, side by side in one run.

Every contender runs in a fresh subprocess (so memory figures do not leak between them) on the same random-init
Llama (CPU: a small one; CUDA: a ~0.5B shape), the same prompts and responses, the same effective batch, max
length, precision (bf16 autocast on CUDA, fp32 on CPU), gradient checkpointing setting, learning rate and
number of optimizer steps. The vocabulary is Llama's 32k although the byte-level tokenizer uses only its first
384 ids, so the LM-head and logits cost is that of a real model.

tokens/s = tokens of the data consumed (each prompt once plus every response, counted with the same tokenizer
for both) / seconds of training. Ours includes its reference log-prob pass (DPO); TRL computes reference
log-probs inside its steps. Model building and tokenisation are outside the timing for both.
Peak memory: on CUDA `torch.cuda.max_memory_allocated` over the whole subprocess; on CPU the growth of the
subprocess's resident set high-water mark (VmHWM, reset after imports) over its resident size before the
model was built, which counts torch's native allocations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CONTENDERS = ("ours_dpo", "trl_dpo", "ours_stable_alignment")


@dataclass(frozen=True)
class BenchSpec:
    device: str = "auto"
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 344
    vocab: int = 32000
    n_prompts: int = 32
    prompt_chars: int = 160  # filler characters in each prompt (bytes = tokens with the byte-level tokenizer)
    response_chars: tuple[int, int] = (80, 160)
    prompts_per_batch: int = 8
    grad_accum: int = 1
    max_length: int = 512
    gradient_checkpointing: bool = False
    learning_rate: float = 1e-4
    seed: int = 0

    @classmethod
    def for_device(cls, device: str = "auto", **overrides) -> BenchSpec:
        """CPU: a small model; CUDA: a ~0.5B shape (0.47B: hidden 1024, 24 layers, MLP 4096, 32k vocabulary)."""
        import torch

        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if cuda:
            base = dict(device=device, hidden=1024, layers=24, heads=16, kv_heads=16, intermediate=4096,
                        n_prompts=512, prompt_chars=384, response_chars=(192, 384), prompts_per_batch=8,
                        max_length=1024)
        else:
            base = dict(device=device)
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class ContenderResult:
    name: str
    steps: int
    tokens: int
    seconds: float
    peak_memory_mb: float
    memory_method: str
    mfu: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class TrainerBench:
    spec: BenchSpec
    device: str
    n_params: int
    results: list[ContenderResult]
    repeats: int = 1

    def result(self, name: str) -> ContenderResult | None:
        return next((r for r in self.results if r.name == name), None)

    @property
    def tokens_per_s_ratio(self) -> float | None:
        ours, trl = self.result("ours_dpo"), self.result("trl_dpo")
        return ours.tokens_per_s / trl.tokens_per_s if ours and trl and trl.tokens_per_s else None

    @property
    def peak_memory_ratio(self) -> float | None:
        ours, trl = self.result("ours_dpo"), self.result("trl_dpo")
        return ours.peak_memory_mb / trl.peak_memory_mb if ours and trl and trl.peak_memory_mb > 0 else None

    def metadata(self) -> dict:
        return {"device": self.device, "n_params": self.n_params, "spec": asdict(self.spec), "repeats": self.repeats,
                "results": [{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in self.results],
                "tokens_per_s_ratio": self.tokens_per_s_ratio, "peak_memory_ratio": self.peak_memory_ratio}

    def lines(self) -> list[str]:
        s = self.spec
        out = [f"trainer benchmark on {self.device}: random-init Llama {self.n_params / 1e6:.1f}M params "
               f"(hidden {s.hidden}, {s.layers} layers, vocab {s.vocab}), {s.n_prompts} prompts, "
               f"{s.prompts_per_batch} prompts/micro-batch x {s.grad_accum} accumulation, max length {s.max_length}, "
               f"gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}"]
        for r in self.results:
            mfu = f", MFU {r.mfu:.1%}" if r.mfu is not None else ""
            wall = r.extra.get("wall_s")
            wall_text = f", {wall:.1f} s wall incl. loading and setup" if wall is not None else ""
            out.append(f"{r.name:<22} {r.tokens_per_s:>10.0f} tokens/s  peak memory {r.peak_memory_mb:>8.1f} MiB "
                       f"({r.steps} steps, {r.tokens} tokens, {r.seconds:.2f} s training{wall_text}{mfu})")
        if self.results:
            best = f"; best of {self.repeats} runs each" if self.repeats > 1 else ""
            out.append(f"peak memory measured as: {self.results[0].memory_method}{best}")
        tps, mem = self.tokens_per_s_ratio, self.peak_memory_ratio
        if tps is not None and mem is not None:
            out.append(f"tokens/s {tps:.2f}x, peak memory {mem:.2f}x")
        else:
            out.append("tokens/s n/a, peak memory n/a (no TRL comparison)")
        return out


def bench_trainer(*, compare_trl: bool = True, device: str = "auto", spec: BenchSpec | None = None,
                  repeats: int = 1, timeout_s: float = 1800.0) -> TrainerBench:
    """Run every contender in its own subprocess (`repeats` times, contenders interleaved, keeping each one's
    fastest run: on a shared machine the slower runs measure the neighbours) and collect the figures."""
    spec = spec or BenchSpec.for_device(device)
    names = [n for n in CONTENDERS if compare_trl or n != "trl_dpo"]
    best: dict[str, ContenderResult] = {}
    n_params, dev = 0, spec.device
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        for _ in range(max(1, repeats)):
            for name in names:
                payload = _run_contender(name, spec, tmp, timeout_s)
                n_params, dev = payload.pop("n_params"), payload.pop("device")
                result = ContenderResult(**payload)
                if name not in best or result.tokens_per_s > best[name].tokens_per_s:
                    best[name] = result
    return TrainerBench(spec=spec, device=dev, n_params=n_params, results=[best[n] for n in names],
                        repeats=max(1, repeats))


def _run_contender(name: str, spec: BenchSpec, tmp: str, timeout_s: float) -> dict:
    # A fresh run directory each time: nothing (reference log-probs included) carries over between runs.
    run_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=tmp)
    proc = subprocess.run(
        [sys.executable, "-m", "alignment_pipeline.bench.trainer", name, json.dumps(asdict(spec)), tmp, run_dir],
        capture_output=True, text=True, timeout=timeout_s, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
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


def _build_model(spec: BenchSpec, out: Path) -> tuple[Path, int]:
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        model = LlamaForCausalLM.from_pretrained(out)
        return out, sum(p.numel() for p in model.parameters())
    tok = ByT5Tokenizer()
    torch.manual_seed(spec.seed)
    config = LlamaConfig(vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                         num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                         num_key_value_heads=spec.kv_heads, max_position_embeddings=4096,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


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

    return TrainingConfig(learning_rate=spec.learning_rate, epochs=1, per_device_batch=spec.prompts_per_batch,
                          grad_accum=spec.grad_accum, max_length=spec.max_length, margin=1.0, warmup_ratio=0.0,
                          lr_scheduler="constant_with_warmup", save_every=10**9, register_model=False,
                          gradient_checkpointing=spec.gradient_checkpointing, device=spec.device, seed=spec.seed,
                          log_every=10**9)


def _data_tokens(groups, spec: BenchSpec) -> int:
    from transformers import ByT5Tokenizer

    from alignment_pipeline.training.data import tokenize_groups

    return sum(g.data_tokens for g in tokenize_groups(ByT5Tokenizer(), groups, max_length=spec.max_length))


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
    from alignment_pipeline.training.trainer import TrainRequest, train

    groups, pairs = _data(spec)
    objective, data = ("dpo", pairs) if name == "ours_dpo" else ("stable_alignment", groups)
    result = train(TrainRequest(data, objective=objective, base_model=str(model_dir), out_dir=tmp / name,
                                config=_training_config(spec), home=HomeLayout(tmp / f"home-{name}"),
                                run_name=f"bench-{name}"))
    m = result.metrics
    if objective == "dpo" and not m.get("reference_seconds"):
        raise RuntimeError("DPO reference log-probs came from a cache; the timing would leave their cost out")
    return {"steps": result.steps, "tokens": _data_tokens(data, spec),
            "seconds": m["train_seconds"] + m.get("reference_seconds", 0.0), "mfu": m.get("mfu"),
            "extra": {"reference_seconds": m.get("reference_seconds", 0.0), "loss": m.get("loss")}}


def _run_trl(spec: BenchSpec, model_dir: Path, tmp: Path, device) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from alignment_pipeline.llm.prompt_format import prompt_format

    _, pairs = _data(spec)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="sdpa")
    fmt = prompt_format(tok)
    dataset = Dataset.from_dict({"prompt": [fmt.render(p.prompt) for p in pairs],
                                 "chosen": [p.responses[0].strip() for p in pairs],
                                 "rejected": [p.responses[1].strip() for p in pairs]})
    cuda = device.type == "cuda"
    args = DPOConfig(output_dir=str(tmp / "trl"), per_device_train_batch_size=spec.prompts_per_batch,
                     gradient_accumulation_steps=spec.grad_accum, max_length=spec.max_length,
                     learning_rate=spec.learning_rate, lr_scheduler_type="constant", warmup_steps=0, num_train_epochs=1,
                     logging_steps=10**9, save_strategy="no", report_to="none", use_cpu=not cuda, bf16=cuda,
                     tf32=cuda or None, gradient_checkpointing=spec.gradient_checkpointing, seed=spec.seed, beta=0.1,
                     dataloader_num_workers=0, disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
    out = trainer.train()
    return {"steps": int(out.global_step), "tokens": _data_tokens(pairs, spec),
            "seconds": float(out.metrics["train_runtime"]), "mfu": None,
            "extra": {"loss": float(out.metrics.get("train_loss", float("nan")))}}


def _contender_main(name: str, spec_json: str, shared_dir: str, run_dir: str) -> None:
    import torch

    from alignment_pipeline.devices import resolve_device

    spec_dict = json.loads(spec_json)
    spec_dict["response_chars"] = tuple(spec_dict["response_chars"])
    spec = BenchSpec(**spec_dict)
    device = resolve_device(spec.device)
    tmp = Path(run_dir)
    model_dir, n_params = _build_model(spec, Path(shared_dir) / "model")
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
        figures = _run_trl(spec, model_dir, tmp, device)
    elif name in ("ours_dpo", "ours_stable_alignment"):
        figures = _run_ours(name, spec, model_dir, tmp)
    else:
        raise SystemExit(f"unknown contender {name!r}; choose one of {', '.join(CONTENDERS)}")
    peak, method = _peak(device, baseline, hwm_reset)
    figures["extra"]["wall_s"] = round(time.perf_counter() - started, 3)
    print(json.dumps({"name": name, **figures, "peak_memory_mb": peak, "memory_method": method,
                      "n_params": n_params, "device": str(device) + (f" ({torch.cuda.get_device_name(device)})"
                                                                    if device.type == "cuda" else "")}))


if __name__ == "__main__":
    _contender_main(*sys.argv[1:5])
