"""Every GPU check in one command, sized to finish in under 8 minutes on one H100/H200:

- `trainer_vs_trl`: our DPO and Stable Alignment against TRL's DPOTrainer (bench/trainer.py) on a
  Qwen2-0.5B-shaped model at random init, bf16 autocast, sequences up to 1024 tokens, 10 warm-up and 100
  steady-state steps: tokens/s, step time, peak memory (`torch.cuda.max_memory_allocated`), MFU;
- `fsdp`: our DPO with `training.strategy: fsdp` on every GPU present, launched with torchrun as the pipeline
  launches training; reported as skipped on fewer than two GPUs (FSDP shards across processes);
- `sandbox`: a 3x3 sandbox round with the real model, batched vs one call at a time (bench/sandbox.py).

Each case runs in its own subprocess under its own time budget; a case that fails or overruns is recorded
with its reason and the others still run. The run writes `gpu_bench.json` and `gpu_bench.md` to the output
directory. `dry_run` runs every case on CPU at toy sizes (tiny models, 2 steps) to check the machinery.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

CASES = ("trainer_vs_trl", "fsdp", "sandbox")
# Seconds per case on the GPU; together under 8 minutes with room for process start-up.
BUDGETS_S = {"trainer_vs_trl": 300.0, "fsdp": 80.0, "sandbox": 80.0}
STATUSES = ("measured", "skipped", "failed")
REPORT_JSON = "gpu_bench.json"
REPORT_MD = "gpu_bench.md"
SANDBOX_MODEL = "smollm2-135m-instruct"


@dataclass
class CaseResult:
    name: str
    status: str  # measured | skipped | failed
    seconds: float
    budget_s: float
    reason: str = ""  # why it was skipped or failed; empty when measured
    headline: str = ""  # one line of the main figures
    lines: list[str] = field(default_factory=list)  # the case's own printed table
    figures: dict = field(default_factory=dict)  # everything it measured, as JSON


@dataclass
class GpuReport:
    dry_run: bool
    machine: dict
    cases: list[CaseResult]
    seconds: float

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "machine": self.machine, "seconds": round(self.seconds, 1),
                "cases": [asdict(c) for c in self.cases]}

    def markdown(self) -> str:
        m = self.machine
        title = "GPU benchmark (dry run: CPU, toy sizes — not GPU figures)" if self.dry_run else "GPU benchmark"
        out = [f"# {title}", "",
               f"Machine: {m.get('gpus') or 'no CUDA device'}; torch {m.get('torch')}, transformers "
               f"{m.get('transformers')}, trl {m.get('trl')}; {m.get('cpu_count')} CPU cores. "
               f"Total {self.seconds:.0f} s.", "",
               "| case | status | seconds (budget) | result |", "|---|---|---|---|"]
        for c in self.cases:
            result = c.headline if c.status == "measured" else c.reason.splitlines()[0] if c.reason else ""
            out.append(f"| {c.name} | {c.status} | {c.seconds:.0f} ({c.budget_s:.0f}) | {result.replace('|', '/')} |")
        for c in self.cases:
            if c.lines:
                out += ["", f"## {c.name}", "", "```", *c.lines, "```"]
            if c.status == "failed":
                out += ["", f"## {c.name}: failed", "", "```", c.reason[-3000:], "```"]
        return "\n".join(out) + "\n"


def machine_info() -> dict:
    import torch
    import transformers
    import trl

    gpus = None
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    try:
        import flash_attn  # noqa: F401

        flash = True
    except ImportError:
        flash = False
    return {"gpus": gpus, "torch": torch.__version__, "cuda": torch.version.cuda, "transformers":
            transformers.__version__, "trl": trl.__version__, "flash_attn_installed": flash,
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def run_gpu_bench(out_dir: str | Path, *, dry_run: bool = False, models_dir: str | Path | None = None,
                  sandbox_model: str | None = None, cases: tuple[str, ...] = CASES,
                  budgets: dict[str, float] | None = None,
                  progress: Callable[[str], None] | None = None) -> GpuReport:
    """Run `cases`, each in a subprocess under its budget, and write the JSON and markdown reports."""
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budgets = {**BUDGETS_S, **(budgets or {})}
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        models = Path(models_dir) if models_dir else Path(tmp) / "models"
        for name in cases:
            if progress:
                progress(f"{name}: running (budget {budgets[name]:.0f} s)")
            result = _run_case(name, budgets[name], dry_run=dry_run, models_dir=models,
                               sandbox_model=sandbox_model, tmp=Path(tmp))
            if progress:
                progress(f"{name}: {result.status} in {result.seconds:.0f} s"
                         + (f": {result.reason.splitlines()[0]}" if result.reason else ""))
            results.append(result)
    report = GpuReport(dry_run=dry_run, machine=machine_info(), cases=results, seconds=time.perf_counter() - started)
    (out / REPORT_JSON).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    (out / REPORT_MD).write_text(report.markdown())
    return report


def _run_case(name: str, budget_s: float, *, dry_run: bool, models_dir: Path, sandbox_model: str | None,
              tmp: Path) -> CaseResult:
    result_file = tmp / f"{name}.json"
    command = [sys.executable, "-m", "alignment_pipeline.bench.gpu", name, str(result_file), str(models_dir),
               sandbox_model or "", "dry" if dry_run else "gpu", str(budget_s)]
    started = time.perf_counter()
    # Its own session, so an overrun kills the case's whole process tree (contenders, torchrun workers).
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        stdout, stderr = proc.communicate(timeout=budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        stdout, stderr = proc.communicate()
        return CaseResult(name, "failed", time.perf_counter() - started, budget_s,
                          reason=f"ran past its budget of {budget_s:.0f} s and was stopped\n{stderr[-2000:]}")
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not result_file.exists():
        return CaseResult(name, "failed", seconds, budget_s,
                          reason=f"exit {proc.returncode}\n{stdout[-1000:]}\n{stderr[-3000:]}".strip())
    payload = json.loads(result_file.read_text())
    return CaseResult(name=name, seconds=seconds, budget_s=budget_s, **payload)


# -- inside a case's subprocess ------------------------------------------------------------------------

class Skip(Exception):
    """The case cannot run here; the message says why."""


def _cuda_or_skip(dry: bool) -> str:
    import torch

    if dry:
        return "cpu"
    if not torch.cuda.is_available():
        raise Skip("no CUDA device visible (run with --dry-run to check the machinery on CPU)")
    return "cuda"


def _trainer_spec(dry: bool):
    from alignment_pipeline.bench.trainer import BenchSpec

    if dry:  # 1 warm-up + 1 measured step on a tiny model
        return BenchSpec.toy(device="cpu", hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64, vocab=2048,
                             prompt_chars=40, response_chars=(20, 40), prompts_per_batch=4, max_length=128,
                             warmup_steps=1, steps=1)
    return BenchSpec.gpu()


def _case_trainer(dry: bool, models_dir: Path, budget_s: float, sandbox_model: str | None) -> dict:
    from alignment_pipeline.bench.trainer import CONTENDERS, bench_trainer

    _cuda_or_skip(dry)
    bench = bench_trainer(spec=_trainer_spec(dry), timeout_s=budget_s, contenders=CONTENDERS)
    ratios = bench.ratios() or {}
    mfu = {r.name: r.mfu for r in bench.results}
    mfu_text = ", ".join(f"{k} {v:.1%}" for k, v in mfu.items() if v is not None) or "n/a (no CUDA peak known)"
    headline = (f"ours/TRL tokens/s {ratios.get('tokens_per_s', float('nan')):.2f}x, peak memory "
                f"{ratios.get('peak_memory', float('nan')):.2f}x; MFU {mfu_text}")
    return {"headline": headline, "lines": bench.lines(), "figures": bench.metadata()}


def _case_fsdp(dry: bool, models_dir: Path, budget_s: float, sandbox_model: str | None) -> dict:
    import torch

    from alignment_pipeline.bench.trainer import bench_trainer

    _cuda_or_skip(dry)
    nproc = 2 if dry else torch.cuda.device_count()  # dry: two CPU processes (gloo)
    if nproc < 2:
        raise Skip(f"{nproc} GPU visible: training.strategy fsdp shards only across more than one process "
                   "(one process per GPU)")
    spec = replace(_trainer_spec(dry), strategy="fsdp", world_size=nproc)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--standalone",
                "--nproc_per_node", str(nproc)]
    bench = bench_trainer(compare_trl=False, spec=spec, timeout_s=budget_s, contenders=("ours_dpo",),
                          launcher=launcher)
    r = bench.result("ours_dpo")
    mfu = f", MFU {r.mfu:.1%}" if r.mfu is not None else ""
    headline = (f"FSDP on {nproc} processes: {r.tokens_per_s:.0f} tokens/s (all ranks), step {r.step_time:.3f} s, peak "
                f"{r.peak_memory_mb:.0f} MiB per rank{mfu}")
    return {"headline": headline, "lines": bench.lines(), "figures": {**bench.metadata(), "nproc": nproc}}


def _case_sandbox(dry: bool, models_dir: Path, budget_s: float, sandbox_model: str | None) -> dict:
    from alignment_pipeline.bench.sandbox import bench_sandbox

    device = _cuda_or_skip(dry)
    if dry:
        from alignment_pipeline.sandbox.embedding import HashingEmbedder

        result = bench_sandbox(home_models_dir=models_dir, size=2, rounds=1, max_new_tokens=2, max_input_tokens=192,
                               device="cpu", model=sandbox_model or "tiny:bench", embedder=HashingEmbedder())
    else:
        result = bench_sandbox(home_models_dir=models_dir, size=3, rounds=1, max_new_tokens=64, device=device,
                               model=sandbox_model or SANDBOX_MODEL, repeats=1)
    return {"headline": f"{result.model}: {result.summary_line()}", "lines": result.lines(),
            "figures": result.metadata()}


_CASE_FUNCS = {"trainer_vs_trl": _case_trainer, "fsdp": _case_fsdp, "sandbox": _case_sandbox}


def _case_main(name: str, result_file: str, models_dir: str, sandbox_model: str, mode: str, budget_s: str) -> None:
    try:
        payload = {"status": "measured", **_CASE_FUNCS[name](mode == "dry", Path(models_dir), float(budget_s),
                                                             sandbox_model or None)}
    except Skip as exc:
        payload = {"status": "skipped", "reason": str(exc)}
    # Any other error propagates: the parent records the exit code and the traceback as the failure.
    Path(result_file).write_text(json.dumps(payload, default=str))


if __name__ == "__main__":
    _case_main(*sys.argv[1:7])
