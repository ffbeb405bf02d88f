"""OpenAIBackend's total deadline, bounded retries and malformed replies, against local servers on 127.0.0.1:
one that trickles its reply a byte at a time, one that always fails, one that answers with the wrong shapes."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from alignment_pipeline.llm.base import GenerationParams
from alignment_pipeline.llm.openai_compat import LLMRequestError, OpenAIBackend
from tests.test_llm_openai import FakeServer, ok

PARAMS = GenerationParams(max_new_tokens=8, temperature=0.0, top_p=1.0, seed=1)


class TricklingServer:
    """Answers every request with headers at once, then one byte of the body every `gap_s`; at most
    `max_bytes` bytes per connection, so even a client without a deadline is released in bounded time."""

    def __init__(self, gap_s: float = 0.05, max_bytes: int = 120) -> None:
        self.gap_s, self.max_bytes = gap_s, max_bytes
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        body = json.dumps({"choices": [{"message": {"content": "x" * 400}}]}).encode()
        with conn:
            try:
                conn.settimeout(1.0)
                conn.recv(65536)  # the request (small: one prompt)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode())
                for byte in body[:self.max_bytes]:
                    if self.stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(self.gap_s)
            except OSError:
                return  # the client gave up: what the deadline is for

    def __enter__(self) -> TricklingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def test_a_trickling_server_cannot_hold_a_request_past_its_deadline():
    # Each byte arrives well within any read timeout; only a deadline on the whole reply stops it. Without
    # one, each attempt would take 120 × 0.05 = 6 s.
    with TricklingServer() as server:
        backend = OpenAIBackend("slow-model", base_url=server.url, timeout_s=0.4, max_retries=1,
                                backoff_base_s=0.01, backoff_max_s=0.02)
        started = time.monotonic()
        with pytest.raises(LLMRequestError) as caught:
            backend.generate(["hello"], PARAMS)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"the request ran {elapsed:.1f}s past a 0.4 s deadline"
    assert server.connections == 2  # the first attempt and one retry
    message = str(caught.value)
    assert "slow-model" in message and server.url in message and "timeout" in message


def test_retries_are_bounded_in_total_time():
    with FakeServer(lambda p, a, b: (503, {}, {"error": {"message": "busy"}}), delay_s=0.05) as server:
        backend = OpenAIBackend("m", base_url=server.url, timeout_s=0.5, max_retries=1000, backoff_base_s=0.05,
                                backoff_max_s=0.1, retry_budget_s=0.6)
        started = time.monotonic()
        with pytest.raises(LLMRequestError, match=r"in 0\.6s\)") as caught:
            backend.generate(["a"], PARAMS)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert 2 <= server.attempts["a"] < 20
    # The last attempt gets only what is left of the budget: on a busy machine it can run out before the 503
    # arrives, and the error then names that timeout instead.
    assert "HTTP 503" in str(caught.value) or "timeout: no complete reply" in str(caught.value)


def test_the_default_budget_bounds_every_attempt_and_backoff():
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9", timeout_s=3, max_retries=2, backoff_max_s=5)
    assert backend.retry_budget_s == 3 * 3 + 5 * 2
    for bad in (float("inf"), float("nan"), 0):
        with pytest.raises(ValueError, match="timeout_s"):
            OpenAIBackend("m", base_url="http://127.0.0.1:9", timeout_s=bad)


def shaped(mutate):
    def plan(prompt, attempt, body):
        status, headers, payload = ok(prompt, body)
        mutate(payload)
        return status, headers, payload
    return plan


@pytest.mark.parametrize("mutate,field", [
    (lambda p: p["choices"][0]["message"].update(content=5), "choices[0].message.content"),
    (lambda p: p["choices"][0]["message"].update(content={"text": "hi"}), "choices[0].message.content"),
    (lambda p: p.update(usage="lots"), "usage"),
    (lambda p: p["usage"].update(prompt_tokens="12"), "usage.prompt_tokens"),
    (lambda p: p["usage"].update(completion_tokens=[3]), "usage.completion_tokens"),
])
def test_malformed_replies_name_model_server_and_field(mutate, field):
    with FakeServer(shaped(mutate)) as server:
        backend = OpenAIBackend("shape-model", base_url=server.url, timeout_s=2, max_retries=0)
        with pytest.raises(LLMRequestError) as caught:
            backend.generate(["q"], PARAMS)
    message = str(caught.value)
    assert "shape-model" in message and server.url in message and f"{field} " in message


def test_malformed_logprobs_name_the_field():
    def plan(prompt, attempt, body):
        status, headers, payload = ok(prompt, body)
        payload["choices"][0]["logprobs"] = {"content": [{"token": "4", "logprob": "high",
                                                          "top_logprobs": [{"token": "4", "logprob": -0.1}]}]}
        return status, headers, payload

    with FakeServer(plan) as server:
        backend = OpenAIBackend("lp-model", base_url=server.url, timeout_s=2, max_retries=0)
        with pytest.raises(LLMRequestError, match=r"lp-model.*choices\[0\]\.logprobs\.content\[0\]\.logprob"):
            backend.score_continuations(["rate"], ["1", "2"])


def test_a_body_that_is_not_an_object_is_named():
    with FakeServer(lambda p, a, b: (200, {}, ["not", "an", "object"])) as server:
        backend = OpenAIBackend("list-model", base_url=server.url, timeout_s=2, max_retries=0)
        with pytest.raises(LLMRequestError, match="list-model.*not an object"):
            backend.generate(["q"], PARAMS)
