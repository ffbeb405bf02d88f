"""OpenAIBackend: any OpenAI-compatible chat completions server (vLLM, llama.cpp, OpenAI, Ollama) over httpx.

Requests of one batch run concurrently, bounded by a semaphore; timeouts, connection errors, 429 and 5xx are
retried with exponential backoff and jitter. `timeout_s` is a total deadline per attempt (connect, send and the
whole body), not a read timeout, so a server trickling bytes cannot hold a request open; the retries of one
request are bounded in count (`max_retries`) and in total time (`retry_budget_s`). A reply of the wrong shape
is an LLMRequestError naming the model, the server and the field. The API key comes from an environment
variable only and never appears in logs, errors or repr."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import email.utils
import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import httpx

from alignment_pipeline.llm.base import Completion, GenerationParams, LLMBackend, PromptLike
from alignment_pipeline.llm.prompt_format import Prompt, cut_at_stop

logger = logging.getLogger("alignment_pipeline.llm")

T = TypeVar("T")

#: a candidate longer than this is not a single token on any common tokenizer ("1".."10", "A".."D")
_MAX_SINGLE_TOKEN_CHARS = 4
_TOP_LOGPROBS = 20
_ERROR_BODY_CHARS = 300
#: how a reply prefix is asked for: chat servers do not continue a trailing assistant message (llama.cpp's
#: Python server closes it and opens a new turn), so the user message asks for it instead
PREFIX_CUE = 'Begin your reply with "{prefix}".'
#: markup a model may put before the prefix ("**Rating:**", "# Rating:") that still counts as starting with it
_LEAD_MARKUP = " \t\r\n*_#>"


class LLMRequestError(RuntimeError):
    """A request the server refused (4xx other than 429) or that kept failing after every retry."""

    def __init__(self, message: str, *, status: int | None = None, model: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.model = model


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Secret:
    """Holds the key so that repr(), vars() and tracebacks show only a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class OpenAIBackend(LLMBackend):
    """Chat completions against `{base_url}/chat/completions`: a `Prompt` is sent as its system and user
    messages (the server applies the model's chat template). A reply `prefix` cannot be continued over this
    API, so the user message ends by asking for it (PREFIX_CUE) and the reply, when it starts with the prefix,
    is returned after it, as local backends return it; a reply that does not is returned whole."""

    supports_logprobs = True  # the server decides; score_continuations raises NotImplementedError if not

    def __init__(self, model: str, *, base_url: str, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout_s: float = 60, max_retries: int = 5,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 retry_budget_s: float | None = None) -> None:
        super().__init__()
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if not (math.isfinite(float(timeout_s)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s}")
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        # All attempts of one request together, from when it gets a connection slot (waiting for a slot is
        # not the server's time): by default every attempt at its full deadline plus the longest backoffs.
        self.retry_budget_s = float(retry_budget_s if retry_budget_s is not None
                                    else self.timeout_s * (max_retries + 1) + backoff_max_s * max_retries)
        if not (math.isfinite(self.retry_budget_s) and self.retry_budget_s > 0):
            raise ValueError(f"retry_budget_s must be a finite number > 0, got {retry_budget_s}")
        # Read once: a missing key is fine for local servers (no Authorization header is sent then).
        key = os.environ.get(api_key_env) or None
        self._api_key = _Secret(key) if key else None
        # Built once: loading the CA bundle costs more than a local request.
        self._verify: Any = httpx.create_ssl_context() if hasattr(httpx, "create_ssl_context") else True

    def __repr__(self) -> str:
        return (f"OpenAIBackend(model={self.model_name!r}, base_url={self.base_url!r}, "
                f"api_key_env={self.api_key_env!r}, has_key={self._api_key is not None})")

    # -- public API -------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[PromptLike], params: GenerationParams) -> list[Completion]:
        if not prompts:
            return []
        started = time.perf_counter()

        def body(index: int, prompt: PromptLike) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "model": self.model_name,
                "messages": _messages(prompt),
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
            }
            if params.seed is not None:
                payload["seed"] = _request_seed(params.seed, index)
            return payload

        responses = self._run_batch([body(i, p) for i, p in enumerate(prompts)])
        out = []
        for index, data in enumerate(responses):
            text = _after_prefix(prompts[index], cut_at_stop(self._message_text(data, index)))
            prompt_tokens, completion_tokens = self._usage(data, index)
            out.append(Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
        self.usage.add(calls=len(prompts), prompt_tokens=sum(c.prompt_tokens for c in out),
                       completion_tokens=sum(c.completion_tokens for c in out),
                       seconds=time.perf_counter() - started)
        return out

    def score_continuations(self, prompts: Sequence[PromptLike], candidates: Sequence[str]) -> list[list[float]]:
        """log P(candidate | prompt, its prefix) from the top log-probs of a short greedy reply.

        Works for single short-token candidates ("1".."7"). The distribution is read right after the prompt's
        prefix, where the greedy reply writes it (after the reply's start when there is no prefix); tokens
        that differ only in surrounding whitespace (" 3", "3") are pooled, and where the tokenizer writes the
        space as a token of its own (" ", "3") that path is added. A candidate outside the server's top 20
        gets -inf, and so does every candidate of a prompt whose greedy reply does not start with the prefix.
        Raises NotImplementedError when candidates are not single tokens or the server returns no log-probs,
        so callers can fall back to parsing generated text."""
        keys = [c.strip() for c in candidates]
        if any(not k or len(k) > _MAX_SINGLE_TOKEN_CHARS or any(ch.isspace() for ch in k) for k in keys):
            raise NotImplementedError(f"{self.model_name}: log-prob scoring over an OpenAI-compatible API needs "
                                      f"single short-token candidates, got {list(candidates)!r}")
        if not prompts:
            return []
        started = time.perf_counter()
        prefixes = [_prefix(p) for p in prompts]

        def body(prompt: PromptLike, max_tokens: int) -> dict[str, Any]:
            return {"model": self.model_name, "messages": _messages(prompt), "max_tokens": max_tokens,
                    "temperature": 0, "logprobs": True, "top_logprobs": _TOP_LOGPROBS}

        # Each token generated with log-probs costs a server real time, so the first ask leaves room for the
        # prefix at two characters a token plus three tokens (leading markup or a lone space, the candidate);
        # replies cut short before the candidate are asked again with room for a token per character.
        rows: list[list[float] | None] = [None] * len(prompts)
        prompt_tokens = completion_tokens = 0
        pending = list(range(len(prompts)))
        for budget in (_first_budget, _full_budget):
            responses = self._run_batch([body(prompts[i], budget(prefixes[i])) for i in pending])
            for index, data in zip(pending, responses, strict=True):
                used = self._usage(data, index)
                prompt_tokens += used[0]
                completion_tokens += used[1]
                cut = budget is _first_budget and _finish_reason(data) == "length"
                rows[index] = _candidate_scores(self._token_logprobs(data, index), prefixes[index], keys, cut)
            pending = [i for i in pending if rows[i] is None]
            if not pending:
                break
        self.usage.add(calls=len(prompts), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                       seconds=time.perf_counter() - started)
        return [row if row is not None else [-math.inf] * len(keys) for row in rows]

    # -- response parsing -------------------------------------------------------------------------------

    def _malformed(self, index: int, field: str, problem: str) -> LLMRequestError:
        """A reply of the wrong shape, named by model, server and field (never a bare TypeError)."""
        return LLMRequestError(f"{self.model_name}: malformed reply from {self.base_url}/chat/completions for "
                               f"prompt {index}: {field} {problem}", model=self.model_name)

    def _message_text(self, data: dict[str, Any], index: int) -> str:
        try:
            content = data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMRequestError(f"{self.model_name}: response from {self.base_url} for prompt {index} has no "
                                  "choices[0].message "
                                  f"(keys: {sorted(data) if isinstance(data, dict) else type(data).__name__})",
                                  model=self.model_name) from exc
        if content is not None and not isinstance(content, str):
            raise self._malformed(index, "choices[0].message.content", f"is {_json_type(content)}, not a string")
        return content or ""

    def _usage(self, data: dict[str, Any], index: int) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) of a reply; a missing usage counts 0, a malformed one raises."""
        usage = data.get("usage")
        if usage is None:
            return 0, 0
        if not isinstance(usage, dict):
            raise self._malformed(index, "usage", f"is {_json_type(usage)}, not an object")
        counts = []
        for key in ("prompt_tokens", "completion_tokens"):
            value = usage.get(key)
            if value is None:
                counts.append(0)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self._malformed(index, f"usage.{key}", f"is {value!r}, not a count of tokens")
            else:
                counts.append(value)
        return counts[0], counts[1]

    def _token_logprobs(self, data: dict[str, Any], index: int) -> list[dict[str, Any]]:
        """The reply's tokens, each with its `token`, `logprob` and `top_logprobs`."""
        try:
            logprobs = data["choices"][0].get("logprobs")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMRequestError(f"{self.model_name}: response for prompt {index} has no choices[0]",
                                  model=self.model_name) from exc
        content = (logprobs or {}).get("content") if isinstance(logprobs, dict) else None
        if content is not None and not isinstance(content, list):
            raise self._malformed(index, "choices[0].logprobs.content", f"is {_json_type(content)}, not a list")
        if not content or not isinstance(content[0], dict) or not content[0].get("top_logprobs"):
            raise NotImplementedError(f"server at {self.base_url} returned no logprobs for model "
                                      f"{self.model_name}; parse the generated text instead")
        for position, entry in enumerate(content):
            where = f"choices[0].logprobs.content[{position}]"
            if not isinstance(entry, dict):
                raise self._malformed(index, where, f"is {_json_type(entry)}, not an object")
            if not _is_number(entry.get("logprob")):
                raise self._malformed(index, f"{where}.logprob", f"is {entry.get('logprob')!r}, not a number")
            top = entry.get("top_logprobs") or []
            if not isinstance(top, list) or not all(isinstance(t, dict) and _is_number(t.get("logprob"))
                                                    for t in top):
                raise self._malformed(index, f"{where}.top_logprobs", "is not a list of {token, logprob} objects")
        return content

    # -- transport --------------------------------------------------------------------------------------

    def _run_batch(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _run_sync(lambda: self._post_all(bodies))

    async def _post_all(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        semaphore = asyncio.Semaphore(self.max_concurrency)
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        limits = httpx.Limits(max_connections=self.max_concurrency,
                              max_keepalive_connections=self.max_concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits,
                                     timeout=self.timeout_s, verify=self._verify) as client:

            async def bounded(index: int, body: dict[str, Any]) -> dict[str, Any]:
                async with semaphore:
                    return await self._post_with_retries(client, index, body)

            tasks = [asyncio.ensure_future(bounded(i, b)) for i, b in enumerate(bodies)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # One prompt failing for good fails the batch; stop the others before the client closes.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _post_with_retries(self, client: httpx.AsyncClient, index: int,
                                 body: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        give_up_at = time.monotonic() + self.retry_budget_s
        while True:
            self.usage.add(batches=1)
            try:
                # One attempt never runs past the budget's end either.
                return await self._post_once(client, body, min(self.timeout_s, give_up_at - time.monotonic()))
            except _Retryable as failure:
                delay = self._backoff(attempt, failure.retry_after)
                if attempt >= self.max_retries or time.monotonic() + delay >= give_up_at:
                    raise LLMRequestError(f"{self.model_name}: request for prompt {index} to {self.base_url} "
                                          f"failed after {attempt + 1} attempts: {failure.reason} (retries "
                                          f"bounded to {self.max_retries + 1} attempts in "
                                          f"{self.retry_budget_s:g}s)", model=self.model_name) from None
                attempt += 1
                self.usage.add(retries=1)
                logger.warning("%s: prompt %d: %s; retry %d/%d in %.2fs", self.model_name, index,
                               failure.reason, attempt, self.max_retries, delay)
                await asyncio.sleep(delay)

    async def _post_once(self, client: httpx.AsyncClient, body: dict[str, Any], deadline_s: float) -> dict[str, Any]:
        # httpx's timeouts bound each read, so a server sending one byte at a time would never trip them;
        # the whole exchange (connect, send, headers, every byte of the body) runs under one deadline.
        try:
            response = await asyncio.wait_for(client.post("/chat/completions", json=body), max(deadline_s, 0.0))
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            raise _Retryable(f"timeout: no complete reply within {deadline_s:.3g}s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection error ({type(exc).__name__}: {self._redact(str(exc))})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
        if status >= 400:
            raise LLMRequestError(f"{self.model_name}: HTTP {status} from {self.base_url}/chat/completions: "
                                  f"{self._redact(response.text[:_ERROR_BODY_CHARS])}",
                                  status=status, model=self.model_name)
        try:
            data = response.json()
        except ValueError as exc:
            raise LLMRequestError(f"{self.model_name}: HTTP {status} from {self.base_url} with a body that is not "
                                  f"JSON: {self._redact(response.text[:_ERROR_BODY_CHARS])!r}",
                                  status=status, model=self.model_name) from exc
        if not isinstance(data, dict):
            raise LLMRequestError(f"{self.model_name}: malformed reply from {self.base_url}/chat/completions: "
                                  f"the body is {_json_type(data)}, not an object", status=status,
                                  model=self.model_name)
        return data

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt)
        # Jitter spreads the retries of many concurrent requests so they do not hit the server together.
        return ceiling * (0.5 + random.random() / 2)

    def _redact(self, text: str) -> str:
        # Some servers echo the key they rejected, as it is or base64-encoded (as in a Basic or Bearer header);
        # error messages must never carry it in any of those forms.
        if self._api_key is not None:
            for form in _secret_forms(self._api_key.reveal()):
                text = text.replace(form, "***")
        return text


def _secret_forms(key: str) -> list[str]:
    """The key and its base64 encodings (standard and URL-safe, padding dropped) alone and in the usual header
    wrappings, longest first so a longer form is replaced before a part of it."""
    forms = {key}
    for wrapped in (key, f"Bearer {key}", f":{key}", f"{key}:"):
        raw = wrapped.encode()
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(encode(raw).decode().rstrip("="))
    return sorted(forms, key=len, reverse=True)


def _request_seed(seed: int, index: int) -> int:
    """The seed of a batch's `index`-th request. A server seeds each request alone, so one seed for all would
    give identical prompts (two neighbours rating one answer) identical samples, where a local batch samples
    each row anew. Hashed rather than `seed + index`, which would replay a request's sample when it is re-asked
    with the next seed at another index."""
    if index == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}|{index}".encode()).digest()[:4], "little") >> 1


def _prefix(prompt: PromptLike) -> str:
    return prompt.prefix.strip() if isinstance(prompt, Prompt) else ""


def _messages(prompt: PromptLike) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    system = [{"role": "system", "content": prompt.system.strip()}] if prompt.system.strip() else []
    user = prompt.user
    if _prefix(prompt):
        user = f"{user}\n\n{PREFIX_CUE.format(prefix=_prefix(prompt))}"
    return [*system, {"role": "user", "content": user}]


def _after_prefix(prompt: PromptLike, text: str) -> str:
    """The reply after the prompt's prefix when it starts with it (after leading markup), else the whole reply."""
    prefix = _prefix(prompt)
    if prefix:
        start = len(text) - len(text.lstrip(_LEAD_MARKUP))
        if text.startswith(prefix, start):
            return text[start + len(prefix):]
    return text


def _prefix_end(tokens: list[dict[str, Any]], prefix: str) -> int | None:
    """Index of the first token after `prefix` in a reply's tokens (len(tokens) when they end on it or before
    it is complete); None when the reply does not start with it."""
    if not prefix:
        return 0
    written = ""
    for i, token in enumerate(tokens):
        written += str(token.get("token", ""))
        lead = written.lstrip(_LEAD_MARKUP)
        if lead == prefix:
            return i + 1
        if not prefix.startswith(lead):
            return None
    return len(tokens)


def _first_budget(prefix: str) -> int:
    return -(-len(prefix) // 2) + 3 if prefix else 2


def _full_budget(prefix: str) -> int:
    return len(prefix) + 4 if prefix else 2


def _finish_reason(data: dict[str, Any]) -> str:
    try:
        return str(data["choices"][0].get("finish_reason") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _candidate_scores(tokens: list[dict[str, Any]], prefix: str, keys: list[str],
                      cut: bool = False) -> list[float] | None:
    """log P(key) right after `prefix` in a greedy reply's tokens (see `score_continuations`); None when the
    reply was `cut` at its token limit before the candidate could be read."""
    at = _prefix_end(tokens, prefix)
    if at is None or at >= len(tokens):
        return None if cut and at is not None else [-math.inf] * len(keys)
    spaced = not str(tokens[at].get("token", "")).strip()
    if cut and spaced and at + 1 >= len(tokens):
        return None
    pooled: dict[str, list[float]] = {}
    for entry in tokens[at].get("top_logprobs") or []:
        pooled.setdefault(str(entry.get("token", "")).strip(), []).append(float(entry["logprob"]))
    if spaced and at + 1 < len(tokens):
        # The space written as a token of its own: P(" ") * P(candidate | " ").
        for entry in tokens[at + 1].get("top_logprobs") or []:
            pooled.setdefault(str(entry.get("token", "")).strip(), []).append(
                float(tokens[at]["logprob"]) + float(entry["logprob"]))
    return [_logsumexp(pooled[k]) if k in pooled else -math.inf for k in keys]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, also when an event loop is already running in
    this thread (a notebook, an async caller): then it runs on a private loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
