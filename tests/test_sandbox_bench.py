"""The sandbox benchmark: its backend wrappers, its summary lines, one tiny real run on the hf backend, and
the openai case (concurrency N against 1) on a small local OpenAI-compatible server."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignment_pipeline.bench.sandbox import BenchResult, OneAtATime, TimedBackend, bench_sandbox
from alignment_pipeline.llm.base import GenerationParams
from alignment_pipeline.llm.openai_compat import PREFIX_CUE
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.sandbox.embedding import HashingEmbedder

SUMMARY = re.compile(r"batched/sequential \d+\.\dx, overhead \d+\.\d%")
CONCURRENCY_SUMMARY = re.compile(r"concurrency 4/1 \d+\.\d\dx, overhead \d+\.\d%")


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


def test_openai_summary_names_the_concurrency():
    result = BenchResult(model="m", device="http://127.0.0.1:1/v1", agents=4, rounds=1, max_new_tokens=8,
                         batched_s=2.0, sequential_s=2.2, batched_backend_s=1.9, sequential_backend_s=2.1,
                         batched_batches=24, sequential_batches=24, batched_calls=24, sequential_calls=24,
                         batched_completion_tokens=1, sequential_completion_tokens=1, backend="openai",
                         concurrency=4)
    assert result.summary_line() == "concurrency 4/1 1.10x, overhead 5.0%"
    assert result.lines()[1].startswith("concurrency 4: 2.000s") and result.lines()[2].startswith("concurrency 1: ")
    assert "HTTP requests" in result.lines()[1]


class ChatServer:
    """A minimal OpenAI-compatible server that answers every chat completion after `delay_s`, many at once:
    a rating when the reply is to start with "Rating:", an answer otherwise, and no log-probs."""

    def __init__(self, delay_s: float) -> None:
        delay = delay_s

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(delay)
                asks_rating = PREFIX_CUE.format(prefix="Rating:") in body["messages"][-1]["content"]
                text = "Rating: 4\nReason: fair enough." if asks_rating else "Ask a friend for help."
                data = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_bench_compares_concurrency_4_with_1():
    server = ChatServer(delay_s=0.03)
    try:
        result = bench_sandbox(home_models_dir="unused", size=2, rounds=1, max_new_tokens=8, model="served",
                               embedder=HashingEmbedder(), backend="openai", base_url=server.base_url,
                               concurrency=4)
    finally:
        server.close()
    print("\n".join(result.lines()))
    assert CONCURRENCY_SUMMARY.fullmatch(result.summary_line())
    assert result.device == server.base_url and result.backend == "openai"
    # 4 drafts, 8 ratings, 4 revisions; each rating also asks for log-probs, which this server does not give:
    # 8 more HTTP requests that count as no call.
    assert result.batched_calls == result.sequential_calls == 16
    assert result.batched_batches == result.sequential_batches == 24
    assert result.batched_completion_tokens == result.sequential_completion_tokens
    assert result.ratio > 1.5, "requests in flight together finish sooner than one at a time"


def test_openai_bench_needs_a_server_and_some_concurrency():
    with pytest.raises(ValueError, match="base_url"):
        bench_sandbox(home_models_dir="unused", backend="openai")
    with pytest.raises(ValueError, match="concurrency"):
        bench_sandbox(home_models_dir="unused", backend="openai", base_url="http://127.0.0.1:9/v1", concurrency=1)


def test_cli_runs_the_openai_case_against_a_server(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import alignment_pipeline.bench.sandbox as bench_module
    from alignment_pipeline.cli import app

    # The CLI uses the sandbox's sentence-transformers embedder; the hashing one keeps this test light.
    monkeypatch.setattr(bench_module, "default_embedder", HashingEmbedder)
    server = ChatServer(delay_s=0.03)
    try:
        out = CliRunner().invoke(app, ["--home", str(tmp_path), "bench", "sandbox", "--backend", "openai",
                                       "--base-url", server.base_url, "--model", "served", "--concurrency", "4",
                                       "--size", "2", "--repeats", "1", "--max-new-tokens", "8", "--json"])
    finally:
        server.close()
    assert out.exit_code == 0, out.output
    assert CONCURRENCY_SUMMARY.search(out.output)
    figures = json.loads(out.output[out.output.index("{"):])
    assert figures["backend"] == "openai" and figures["concurrency"] == 4 and figures["device"] == server.base_url


def test_cli_openai_case_needs_a_base_url(tmp_path):
    from typer.testing import CliRunner

    from alignment_pipeline.cli import app

    out = CliRunner().invoke(app, ["--home", str(tmp_path), "bench", "sandbox", "--backend", "openai"])
    assert out.exit_code == 2 and "--base-url" in out.output
    out = CliRunner().invoke(app, ["--home", str(tmp_path), "bench", "sandbox", "--backend", "vllm"])
    assert out.exit_code == 2 and "hf or openai" in out.output
