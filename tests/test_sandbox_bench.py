"""The sandbox benchmark: its backend wrappers, its summary line, and one tiny real run on the hf backend."""

from __future__ import annotations

import re

from alignment_pipeline.bench.sandbox import BenchResult, OneAtATime, TimedBackend, bench_sandbox
from alignment_pipeline.llm.base import GenerationParams
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.sandbox.embedding import HashingEmbedder

SUMMARY = re.compile(r"batched/sequential \d+\.\dx, overhead \d+\.\d%")


def test_one_at_a_time_splits_batches_and_timing_passes_through():
    inner = ScriptedLLM(lambda p: p.upper(), scorer=lambda p, c: [0.0] * len(c))
    timed = TimedBackend(OneAtATime(inner))
    out = timed.generate(["a", "b", "c"], GenerationParams())
    assert [c.text for c in out] == ["A", "B", "C"]
    assert inner.batch_sizes == [1, 1, 1]
    assert timed.score_continuations(["a", "b"], [" 1", " 2"]) == [[0.0, 0.0], [0.0, 0.0]]
    assert timed.usage is inner.usage and inner.usage.batches == 5  # 3 generate + 2 scoring calls
    assert timed.supports_logprobs and timed.model_name == inner.model_name
    assert timed.seconds > 0


def test_summary_line_format():
    result = BenchResult(model="m", device="cpu", agents=9, rounds=1, max_new_tokens=8, batched_s=2.0,
                         sequential_s=24.6, batched_backend_s=1.916, sequential_backend_s=24.0, batched_batches=4,
                         sequential_batches=66, batched_calls=66, sequential_calls=66,
                         batched_completion_tokens=1, sequential_completion_tokens=1)
    assert result.summary_line() == "batched/sequential 12.3x, overhead 4.2%"
    assert result.lines()[-1] == result.summary_line()
    assert result.metadata()["ratio"] == 12.3


def test_tiny_bench_runs_both_modes(tmp_path):
    result = bench_sandbox(home_models_dir=tmp_path / "models", size=2, rounds=1, max_new_tokens=2,
                           max_input_tokens=192, device="cpu", embedder=HashingEmbedder())
    assert SUMMARY.fullmatch(result.summary_line())
    assert result.batched_s > 0 and result.sequential_s > 0
    assert 0 <= result.overhead < 1 and result.batched_backend_s <= result.batched_s
    # 4 drafts, 8 sampled feedback ratings and their 8 log-prob scorings, 4 revisions; re-asks of unparsed
    # ratings and blank replies of the random model add requests, so the two runs can differ by a few.
    assert result.batched_calls >= 24 and result.sequential_calls >= 24
    assert result.sequential_batches == result.sequential_calls, "one model call per request"
    # Batched: drafts 1, sampled ratings 1 (+ at most 2 re-ask batches), scoring 1 (8 prompts, one row each),
    # revisions 1, plus at most one re-ask batch for blank drafts and one for blank revisions.
    assert 4 <= result.batched_batches <= 8
