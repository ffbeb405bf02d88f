"""OpenAIBackend against a local fake OpenAI-compatible server that fails some requests on purpose."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignment_pipeline.llm.base import GenerationParams
from alignment_pipeline.llm.openai_compat import PREFIX_CUE, LLMRequestError, OpenAIBackend
from alignment_pipeline.llm.prompt_format import Prompt

KEY = "sk-test-9f8e7d6c5b4a-secret"
MODEL = "fake-model"
PARAMS = GenerationParams(max_new_tokens=16, temperature=0.7, top_p=0.9, seed=11)

# plan(prompt, attempt, body) -> (status, headers, payload) or ("sleep", seconds)
Plan = Callable[[str, int, dict], tuple]


def ok(prompt: str, body: dict) -> tuple:
    return 200, {}, {
        "id": "x", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {prompt}"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": 3, "total_tokens": len(prompt) + 3},
    }


class FakeServer:
    def __init__(self, plan: Plan, delay_s: float = 0.03) -> None:
        self.plan = plan
        self.delay_s = delay_s
        self.attempts: dict[str, int] = defaultdict(int)
        self.auth_headers: list[str | None] = []
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    attempt = server.attempts[prompt]
                    server.attempts[prompt] += 1
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.bodies.append(body)
                try:
                    time.sleep(server.delay_s)
                    if self.path != "/v1/chat/completions":
                        action = (404, {}, {"error": {"message": f"no route {self.path}"}})
                    else:
                        action = server.plan(prompt, attempt, body)
                    if action[0] == "sleep":
                        time.sleep(action[1])
                        action = ok(prompt, body)
                    status, headers, payload = action
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this request (timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def backend(server: FakeServer, **kwargs) -> OpenAIBackend:
    options = dict(base_url=server.url, max_concurrency=3, timeout_s=0.5, max_retries=4, backoff_base_s=0.01,
                   backoff_max_s=0.05)
    options.update(kwargs)
    return OpenAIBackend(MODEL, **options)


def flaky_plan(prompt: str, attempt: int, body: dict) -> tuple:
    """Every prompt's first attempt gets a 500; p3's second a 429; p5's second times out."""
    if attempt == 0:
        return 500, {}, {"error": {"message": "internal error"}}
    if prompt == "p3" and attempt == 1:
        return 429, {"Retry-After": "0"}, {"error": {"message": "slow down"}}
    if prompt == "p5" and attempt == 1:
        return "sleep", 1.5
    return ok(prompt, body)


def test_retries_order_usage_concurrency_and_key_hygiene(monkeypatch, caplog):
    monkeypatch.setenv("FAKE_LLM_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    prompts = [f"p{i}" for i in range(10)]
    with FakeServer(flaky_plan) as server:
        b = backend(server, api_key_env="FAKE_LLM_KEY")
        out = b.generate(prompts, PARAMS)
    assert [c.text for c in out] == [f"echo: {p}" for p in prompts]
    assert [c.prompt_tokens for c in out] == [len(p) for p in prompts]
    assert all(c.completion_tokens == 3 for c in out)
    # 10 first-attempt 500s + one 429 + one timeout
    assert b.usage.retries == 12
    assert b.usage.batches == 22 and b.usage.calls == 10
    assert b.usage.prompt_tokens == sum(len(p) for p in prompts) and b.usage.completion_tokens == 30
    assert server.attempts["p3"] == 3 and server.attempts["p5"] == 3 and server.attempts["p0"] == 2
    assert set(server.auth_headers) == {f"Bearer {KEY}"}
    assert 2 <= server.max_in_flight <= 3
    body = server.bodies[0]
    assert body["model"] == MODEL and body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (16, 0.7, 0.9)
    # One seed per request: the first keeps the batch's, the others differ, and a retry keeps its request's.
    seeds = {}
    for sent in server.bodies:
        assert seeds.setdefault(sent["messages"][0]["content"], sent["seed"]) == sent["seed"]
    assert seeds["p0"] == 11 and len(set(seeds.values())) == 10
    retry_logs = [r for r in caplog.records if r.name == "alignment_pipeline.llm" and "retry" in r.getMessage()]
    assert len(retry_logs) == 12
    assert any("HTTP 429" in r.getMessage() for r in retry_logs)
    assert any("timeout" in r.getMessage() for r in retry_logs)
    assert KEY not in caplog.text
    assert all(KEY not in r.getMessage() for r in caplog.records)
    assert KEY not in repr(b) and KEY not in repr(vars(b))


@pytest.mark.parametrize("status", [400, 401])
def test_client_errors_fail_at_once_without_the_key(monkeypatch, caplog, status):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)

    def refuse(prompt, attempt, body):
        # Real servers echo the rejected key in their error body.
        return status, {}, {"error": {"message": f"Incorrect API key provided: {KEY}"}}

    with FakeServer(refuse) as server:
        b = backend(server)
        with pytest.raises(LLMRequestError) as caught:
            b.generate(["hello"], PARAMS)
    message = str(caught.value)
    assert str(status) in message and MODEL in message and "Incorrect API key" in message
    assert KEY not in message and KEY not in repr(caught.value)
    assert caught.value.status == status
    assert server.attempts["hello"] == 1 and b.usage.retries == 0
    assert KEY not in caplog.text


def test_gives_up_after_max_retries(caplog):
    with FakeServer(lambda p, a, b: (503, {}, {"error": {"message": "overloaded"}})) as server:
        b = backend(server, max_retries=2)
        with pytest.raises(LLMRequestError, match=r"failed after 3 attempts: HTTP 503"):
            b.generate(["a"], PARAMS)
    assert server.attempts["a"] == 3 and b.usage.retries == 2


def test_retry_after_honoured_and_capped():
    def limited(prompt, attempt, body):
        if attempt == 0:
            return 429, {"Retry-After": "0.4"}, {}
        return ok(prompt, body)

    with FakeServer(limited, delay_s=0) as server:
        b = backend(server, backoff_max_s=5.0)
        started = time.perf_counter()
        b.generate(["a"], PARAMS)
        waited = time.perf_counter() - started
        assert 0.4 <= waited < 2.0
        capped = backend(server, backoff_max_s=0.05)
        started = time.perf_counter()
        capped.generate(["b"], PARAMS)
        assert time.perf_counter() - started < 0.35


def test_requests_waiting_for_a_slot_do_not_time_out():
    # 6 requests of 0.2 s through 2 slots take 0.6 s, longer than the 0.3 s timeout: only the time on the
    # wire may count against it, not the wait for a free slot.
    with FakeServer(lambda p, a, b: ok(p, b), delay_s=0.2) as server:
        b = backend(server, max_concurrency=2, timeout_s=0.3, max_retries=0)
        out = b.generate([f"q{i}" for i in range(6)], PARAMS)
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(6)]
    assert b.usage.retries == 0 and server.max_in_flight == 2


def test_no_key_means_no_authorization_header(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeServer(lambda p, a, b: ok(p, b)) as server:
        b = backend(server)
        assert b.generate(["x", "y"], PARAMS)[1].text == "echo: y"
    assert server.auth_headers == [None, None]


def test_works_inside_a_running_event_loop():
    with FakeServer(lambda p, a, b: ok(p, b)) as server:
        b = backend(server)

        async def caller():
            return b.generate(["inside"], PARAMS)

        assert asyncio.run(caller())[0].text == "echo: inside"


def rating_logprobs(prompt, attempt, body):
    top = [{"token": str(r), "logprob": math.log(p), "bytes": []}
           for r, p in [(4, 0.4), (5, 0.2), (3, 0.1), (1, 0.05), (7, 0.05)]]
    top.append({"token": " 4", "logprob": math.log(0.1), "bytes": []})  # same rating, leading space
    top.append({"token": "The", "logprob": math.log(0.1), "bytes": []})
    status, headers, payload = ok(prompt, body)
    payload["choices"][0]["message"]["content"] = "4"
    payload["choices"][0]["logprobs"] = {"content": [{"token": "4", "logprob": math.log(0.4), "top_logprobs": top}]}
    return status, headers, payload


def test_score_continuations_maps_top_logprobs():
    with FakeServer(rating_logprobs) as server:
        b = backend(server)
        scores = b.score_continuations(["rate A", "rate B"], [str(i) for i in range(1, 8)])
    assert len(scores) == 2
    expected = [math.log(0.05), -math.inf, math.log(0.1), math.log(0.5), math.log(0.2), -math.inf, math.log(0.05)]
    for row in scores:
        assert row == pytest.approx(expected)
    body = server.bodies[0]
    assert (body["logprobs"], body["top_logprobs"], body["max_tokens"], body["temperature"]) == (True, 20, 2, 0)
    assert b.usage.calls == 2


def test_score_continuations_without_logprobs_raises_not_implemented():
    with FakeServer(lambda p, a, b: ok(p, b)) as server:
        b = backend(server)
        with pytest.raises(NotImplementedError, match="no logprobs"):
            b.score_continuations(["rate A"], ["1", "2", "3"])
        with pytest.raises(NotImplementedError, match="single short-token"):
            b.score_continuations(["rate A"], ["yes please", "no"])


def test_an_echoed_key_is_redacted_in_base64_too(monkeypatch):
    import base64

    from alignment_pipeline.llm.openai_compat import OpenAIBackend

    key = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("AP_TEST_KEY", key)
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9", api_key_env="AP_TEST_KEY")
    echoes = [key, base64.b64encode(key.encode()).decode(), base64.b64encode(f"Bearer {key}".encode()).decode(),
              base64.urlsafe_b64encode(f":{key}".encode()).decode().rstrip("=")]
    text = backend._redact("rejected: " + " | ".join(echoes))
    assert key not in text and not any(e in text for e in echoes[1:]) and text.count("***") == 4


# -- reply prefixes ("Rating:"): asked for in the user message, returned after it --------------------------------

def replying(texts: dict[str, str]) -> Plan:
    def plan(prompt, attempt, body):
        status, headers, payload = ok(prompt, body)
        payload["choices"][0]["message"]["content"] = texts[prompt.split("\n\n")[0]]
        return status, headers, payload
    return plan


def test_a_prefix_is_asked_for_and_the_reply_returned_after_it():
    texts = {"a": "Rating: 4\nReason: fine", "b": "**Rating:** 5", "c": "The answer is fine.",
             "d": "Rating: 2<|im_end|>\n<|im_start|>user", "e": "Paris.\n### Instruction: more"}
    with FakeServer(replying(texts)) as server:
        b = backend(server)
        out = b.generate([Prompt(k, prefix="Rating:") for k in "abcd"] + [Prompt("e")], PARAMS)
    assert [c.text for c in out] == [" 4\nReason: fine", "** 5", "The answer is fine.", " 2", "Paris.\n"]
    users = {body["messages"][-1]["content"] for body in server.bodies}
    assert f"a\n\n{PREFIX_CUE.format(prefix='Rating:')}" in users and "e" in users
    assert all(len(body["messages"]) == 1 for body in server.bodies), "no assistant message is sent"


def token(text: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    return {"token": text, "logprob": logprob, "bytes": [],
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": []} for t, lp in top]}


GREEDY = {
    # "Rating:" then a lone space, then the digit: P(" ") * P(digit | " ") plus the direct " 4"/"4" tokens.
    "spaced": [token("R", -0.1, [("R", -0.1)]), token("ating", 0.0, [("ating", 0.0)]), token(":", 0.0, [(":", 0.0)]),
               token(" ", math.log(0.8), [(" ", math.log(0.8)), ("4", math.log(0.1))]),
               token("4", math.log(0.5), [("4", math.log(0.5)), ("5", math.log(0.25))])],
    "markup": [token("**", 0.0, [("**", 0.0)]), token("Rating:", 0.0, [("Rating:", 0.0)]),
               token(" 6", math.log(0.9), [(" 6", math.log(0.9)), (" 2", math.log(0.05))])],
    "elsewhere": [token("The", -0.5, [("The", -0.5), ("4", -2.0)]), token(" 4", -0.1, [(" 4", -0.1)])],
}


def greedy_plan(prompt, attempt, body):
    key = prompt.split("\n\n")[0]
    status, headers, payload = ok(prompt, body)
    tokens = GREEDY[key] if key in GREEDY else GREEDY["spaced"][:3 if body["max_tokens"] < 10 else 5]
    tokens = tokens[:body["max_tokens"]]
    payload["choices"][0]["message"]["content"] = "".join(t["token"] for t in tokens)
    payload["choices"][0]["logprobs"] = {"content": tokens}
    payload["choices"][0]["finish_reason"] = "length"
    return status, headers, payload


def test_scores_are_read_after_the_prefix_the_greedy_reply_writes():
    with FakeServer(greedy_plan) as server:
        b = backend(server)
        rows = b.score_continuations([Prompt(k, prefix="Rating:") for k in ("spaced", "markup", "elsewhere", "cut")],
                                     [f" {n}" for n in range(1, 8)])
    spaced, markup, elsewhere, cut = rows
    assert spaced[3] == pytest.approx(math.log(0.1 + 0.8 * 0.5)) and spaced[4] == pytest.approx(math.log(0.8 * 0.25))
    assert spaced[0] == -math.inf
    assert markup[5] == pytest.approx(math.log(0.9)) and markup[1] == pytest.approx(math.log(0.05))
    assert elsewhere == [-math.inf] * 7, "a reply that does not start with the prefix gives no scores"
    # "cut" stopped at its first token limit right after the prefix: asked again with more room.
    assert cut == pytest.approx(spaced)
    budgets = sorted(body["max_tokens"] for body in server.bodies if body["messages"][0]["content"].startswith("cut"))
    assert budgets == [7, 11]
    assert all(body["max_tokens"] == 7 for body in server.bodies
               if not body["messages"][0]["content"].startswith("cut"))
