"""Benchmark: one sandbox round with every phase batched vs the same round one LLM call at a time.

Both runs use the same model, the same world (config, seed, neighbour draws, questions, prior memories) and
the same embedder, each in its own temporary warehouse. On the `hf` backend (a local model) the sequential
run wraps the backend so that every batch is split into size-1 calls. On the `openai` backend (a running
OpenAI-compatible server, e.g. llama.cpp's) the batched run keeps `concurrency` requests in flight and the
sequential run one. Model loading, world creation and a warm-up call are outside the timed part. Overhead is
the batched round's wall time not spent inside the backend (embedding, retrieval, prompt building, DuckDB
commits) as a share of that round.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from alignment_pipeline.llm.base import Completion, GenerationParams, LLMBackend
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.llm.models import resolve_model_path
from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.sandbox.embedding import Embedder, default_embedder
from alignment_pipeline.sandbox.memory import load_prior_memories
from alignment_pipeline.sandbox.rounds import BackendPool, RoundContext, run_round
from alignment_pipeline.sandbox.run import prepare_world
from alignment_pipeline.sandbox.store import insert_prompts, load_prompts
from alignment_pipeline.warehouse.db import Warehouse

BENCH_BATCH = "bench-sandbox"


class TimedBackend(LLMBackend):
    """Passes every call through to `inner` and adds up the wall seconds spent inside it."""

    def __init__(self, inner: LLMBackend):
        super().__init__()
        self.inner = inner
        self.usage = inner.usage  # the sandbox reads calls and tokens from the real backend's counters
        self.model_name = inner.model_name
        self.supports_logprobs = inner.supports_logprobs
        self.seconds = 0.0

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        started = time.perf_counter()
        try:
            return self.inner.generate(prompts, params)
        finally:
            self.seconds += time.perf_counter() - started

    def score_continuations(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
        started = time.perf_counter()
        try:
            return self.inner.score_continuations(prompts, candidates)
        finally:
            self.seconds += time.perf_counter() - started


class OneAtATime(LLMBackend):
    """Splits every batch into size-1 calls of `inner`: the sequential baseline."""

    def __init__(self, inner: LLMBackend):
        super().__init__()
        self.inner = inner
        self.usage = inner.usage
        self.model_name = inner.model_name
        self.supports_logprobs = inner.supports_logprobs

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        return [self.inner.generate([p], params)[0] for p in prompts]

    def score_continuations(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
        return [self.inner.score_continuations([p], candidates)[0] for p in prompts]


@dataclass
class BenchResult:
    model: str
    device: str
    agents: int
    rounds: int
    max_new_tokens: int
    batched_s: float
    sequential_s: float
    batched_backend_s: float
    sequential_backend_s: float
    batched_batches: int
    sequential_batches: int
    batched_calls: int
    sequential_calls: int
    batched_completion_tokens: int
    sequential_completion_tokens: int
    repeats: int = 1  # each mode's time is its fastest of this many alternating repeats
    backend: str = "hf"
    concurrency: int = 1  # openai: requests in flight in the batched run (the sequential run has one)

    @property
    def ratio(self) -> float:
        """How many times faster the batched round ran."""
        return self.sequential_s / self.batched_s if self.batched_s > 0 else float("inf")

    @property
    def overhead(self) -> float:
        """Share of the batched round's wall time spent outside the backend."""
        return max(self.batched_s - self.batched_backend_s, 0.0) / self.batched_s if self.batched_s > 0 else 0.0

    def summary_line(self) -> str:
        if self.backend == "openai":
            return f"concurrency {self.concurrency}/1 {self.ratio:.2f}x, overhead {self.overhead * 100:.1f}%"
        return f"batched/sequential {self.ratio:.1f}x, overhead {self.overhead * 100:.1f}%"

    def metadata(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3), "overhead": round(self.overhead, 4)}

    def lines(self) -> list[str]:
        """A short human-readable account, ending with the summary line."""
        if self.backend == "openai":
            names, unit = (f"concurrency {self.concurrency}", "concurrency 1"), "HTTP requests"
        else:
            names, unit = ("batched", "sequential"), "model batches"
        width = max(len(n) for n in names) + 1
        return [
            f"sandbox round: {self.agents} agents x {self.rounds} round(s), {self.model} ({self.backend}) on "
            f"{self.device}, max_new_tokens {self.max_new_tokens}, best of {self.repeats} alternating repeat(s)",
            f"{names[0] + ':':<{width}} {self.batched_s:.3f}s ({self.batched_backend_s:.3f}s in the backend, "
            f"{self.batched_batches} {unit}, {self.batched_calls} requests, "
            f"{self.batched_completion_tokens} generated tokens)",
            f"{names[1] + ':':<{width}} {self.sequential_s:.3f}s ({self.sequential_backend_s:.3f}s in the backend, "
            f"{self.sequential_batches} {unit}, {self.sequential_calls} requests, "
            f"{self.sequential_completion_tokens} generated tokens)",
            self.summary_line(),
        ]


def _timed_rounds(warehouse: Warehouse, config: SandboxConfig, embedder: Embedder,
                  backend: TimedBackend, progress: Callable[[str], None] | None) -> tuple[float, dict]:
    world, world_id = prepare_world(warehouse, BENCH_BATCH, config, embedder)
    pool = BackendPool(lambda spec: backend)
    ctx = RoundContext(warehouse, world, world_id, BENCH_BATCH, config, load_prompts(warehouse, BENCH_BATCH),
                       embedder, pool, progress)
    before = backend.usage.snapshot()
    started = time.perf_counter()
    for r in range(config.rounds):
        run_round(ctx, r, range(len(world)))
    elapsed = time.perf_counter() - started
    after = backend.usage.snapshot()
    return elapsed, {k: after[k] - before[k] for k in ("calls", "batches", "completion_tokens")}


def bench_sandbox(*, home_models_dir: str | Path, size: int = 3, rounds: int = 1, max_new_tokens: int = 32,
                  model: str = "tiny:bench", device: str = "auto", max_input_tokens: int = 2048, repeats: int = 1,
                  embedder: Embedder | None = None, progress: Callable[[str], None] | None = None,
                  backend: Literal["hf", "openai"] = "hf", base_url: str | None = None,
                  concurrency: int = 8) -> BenchResult:
    """Time the same sandbox round(s) batched and one call at a time (see module doc). `backend="hf"` loads
    `model` locally; `backend="openai"` sends to the server at `base_url` (`model` is its model name) with
    `concurrency` requests in flight against one. With `repeats` > 1 the two modes alternate (batched,
    sequential, batched, ...) and each mode reports its fastest repeat, so load from other processes skews
    both alike. `embedder` defaults to the packaged sentence-transformers model the sandbox uses."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if backend == "hf":
        from alignment_pipeline.llm.hf import HFBackend

        hf = HFBackend(resolve_model_path(model, home_models_dir), device=device, model_name=model,
                       max_input_tokens=max_input_tokens)
        spec = BackendSpec(kind="hf", model=model, device=device, max_input_tokens=max_input_tokens)
        contenders: dict[str, LLMBackend] = {"batched": hf, "sequential": OneAtATime(hf)}
        warm_up: list[LLMBackend] = [hf]
        where = str(hf.device)
    elif backend == "openai":
        from alignment_pipeline.llm.openai_compat import OpenAIBackend

        if not base_url:
            raise ValueError("the openai benchmark needs the base_url of a running OpenAI-compatible server")
        if concurrency < 2:
            raise ValueError(f"concurrency must be >= 2 to compare with one request at a time, got {concurrency}")
        spec = BackendSpec(kind="openai", model=model, base_url=base_url, max_concurrency=concurrency)
        contenders = {"batched": OpenAIBackend(model, base_url=base_url, max_concurrency=concurrency),
                      "sequential": OpenAIBackend(model, base_url=base_url, max_concurrency=1)}
        warm_up = list(contenders.values())
        where = base_url
    else:
        raise ValueError(f"backend must be hf or openai, got {backend!r}")
    embedder = embedder or default_embedder()
    config = SandboxConfig(size=size, rounds=rounds, max_new_tokens=max_new_tokens, agent_models=[spec],
                           observer=spec)
    questions = sorted({p.question for p in load_prior_memories(config.prior_memories_path())})
    # Warm-up outside the timing: first-call allocations, kernel selection, connections, embedder start-up.
    warm = GenerationParams(max_new_tokens=4)
    for contender in warm_up:
        contender.generate(["warm up"], warm)
        try:
            contender.score_continuations(["warm up"], [" 1", " 2"])
        except NotImplementedError:
            pass  # a server without log-probs: the round rates by parsing text alone
    embedder.encode(["warm up"])
    timings: dict[str, tuple[float, float, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        for repeat in range(repeats):
            for mode in ("batched", "sequential"):
                warehouse = Warehouse(Path(tmp) / f"{mode}-{repeat}.duckdb")
                insert_prompts(warehouse, BENCH_BATCH, questions, source_file="bench")
                timed = TimedBackend(contenders[mode])
                if progress is not None:
                    progress(f"{mode} round(s), repeat {repeat + 1}/{repeats}")
                elapsed, usage = _timed_rounds(warehouse, config, embedder, timed, None)
                if mode not in timings or elapsed < timings[mode][0]:
                    timings[mode] = (elapsed, timed.seconds, usage)
    for contender in warm_up:
        contender.close()
    (b_s, b_backend, b_use), (s_s, s_backend, s_use) = timings["batched"], timings["sequential"]
    return BenchResult(model=model, device=where, agents=size * size, rounds=rounds,
                       max_new_tokens=max_new_tokens, batched_s=round(b_s, 4), sequential_s=round(s_s, 4),
                       batched_backend_s=round(b_backend, 4), sequential_backend_s=round(s_backend, 4),
                       batched_batches=int(b_use["batches"]), sequential_batches=int(s_use["batches"]),
                       batched_calls=int(b_use["calls"]), sequential_calls=int(s_use["calls"]),
                       batched_completion_tokens=int(b_use["completion_tokens"]),
                       sequential_completion_tokens=int(s_use["completion_tokens"]), repeats=repeats,
                       backend=backend, concurrency=concurrency if backend == "openai" else 1)
