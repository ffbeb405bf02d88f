"""Ratings as the paper takes them, and always honest: a number in 1..7 the model actually wrote, or NULL
with the reason why.

Every neighbour and observer samples its own reply at the configured temperature (the paper: 1.0), the reply
starting with "Rating:" (templates.py), so two neighbours of one agent may disagree. The reply must hold a
line `Rating: N` with a single digit N in 1..7 followed by a space, `#`, `/7`, punctuation or the line's end
(so "Rating: 10", "Rating: 4.5" fail), and no other `Rating:` line with another value; the reason is the
text written after that rating. Failed replies are re-asked, batched, at most `retries` times; a rating
still missing is NULL with a `null_reason`. No placeholder number is ever stored.

Where the backend gives log-probabilities, the probabilities of " 1" .. " 7" right after "Rating:" are read
as well: their total (`mass`) and, only when they hold most of the probability there (mass >= MIN_MASS),
their renormalised expected value (`expected`). That expectation is an extra column; it never stands in
for a failed parse.

`rate_on_scale` is the cheaper way for observers (`sandbox.observer_replies: scale`): one forward pass, the
rating drawn from the model's own distribution over " 1" .. " 7" after "Rating:" at the sampling temperature
(decoding constrained to the scale, as guided-choice decoding does), no reason written. SmolLM2, for one,
writes a digit there about 40% of the time and otherwise starts a word (" Not", " **"); the draw is the rating
it gives when it gives a number at once, `mass` records how often that is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from alignment_pipeline.llm.base import GenerationParams, LLMBackend, PromptLike
from alignment_pipeline.llm.prompt_format import Prompt
from alignment_pipeline.sandbox.dispatch import generate_batched, group_by_backend
from alignment_pipeline.sandbox.templates import RATING_CANDIDATES

PARSED = "parsed"
SCALE = "scale"  # drawn from the log-probs of the seven ratings (rate_on_scale)
MIN_MASS = 0.5  # share of probability the seven ratings need for their expectation to mean anything
_RATING_LINE = re.compile(r"^[ \t*]*Rating:[ \t*]*([1-7])(?=[ \t,;#*]|/7(?![0-9])|\.(?![0-9])|$)(.*)$",
                          re.MULTILINE | re.IGNORECASE)
_ANY_RATING_LINE = re.compile(r"^[ \t*]*Rating:[ \t*]*(\S*)", re.MULTILINE | re.IGNORECASE)
_REASON_PREFIX = re.compile(r"^[\s#.,;*]*(?:/7|out of 7)?[\s#.,;*]*(?:Reason:)?[\s*]*", re.IGNORECASE)

RatingRequest = tuple[LLMBackend, PromptLike]


@dataclass(frozen=True)
class RatingResult:
    value: float | None  # the integer written (scale: drawn from the log-probs); None when no honest rating exists
    argmax: int | None  # the same integer (kept as an integer column)
    method: str | None  # parsed | scale | None
    reason: str  # the reason written with the rating (the raw last reply when the rating is NULL)
    null_reason: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    expected: float | None = None  # log-prob expected rating, only where mass >= MIN_MASS
    mass: float | None = None  # P(" 1" .. " 7") after "Rating:"; None without log-probs


def parse_rating(text: str) -> tuple[int, str] | None:
    """(rating, reason) from a reply holding a strict `Rating: N` line, else None."""
    values = {m.group(1).strip("*").split("/")[0].rstrip(".,;") for m in _ANY_RATING_LINE.finditer(text)}
    match = _RATING_LINE.search(text)
    if match is None or len(values) != 1:
        return None
    rest = match.group(2) + text[match.end():]
    return int(match.group(1)), _REASON_PREFIX.sub("", rest, count=1).strip()


def parse_reply(prompt: PromptLike, text: str) -> tuple[int, str] | None:
    """A reply continues the prompt's prefix ("Rating:") on local models; servers return it whole."""
    if isinstance(prompt, Prompt) and prompt.prefix:
        parsed = parse_rating(prompt.prefix + text)
        if parsed is not None:
            return parsed
    return parse_rating(text)


def rating_expectation(logprobs: Sequence[float]) -> tuple[float | None, float | None]:
    """(expected value over 1..7 renormalised, or None when the seven hold less than MIN_MASS; their mass)
    from the log-probs of " 1" .. " 7"; (None, None) when they are not finite."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.shape != (7,) or np.isnan(lp).any() or not np.isfinite(lp).any():
        return None, None
    p = np.exp(lp)
    mass = float(p.sum())
    if mass < MIN_MASS:
        return None, mass
    return float((p / mass) @ np.arange(1, 8)), mass


def rate(requests: Sequence[RatingRequest], params: GenerationParams, retries: int) -> list[RatingResult]:
    """Rate every (backend, prompt) request: sampled replies parsed (one batched call per backend per attempt),
    plus the log-prob expectation where the backend has log-probs."""
    results: list[RatingResult | None] = [None] * len(requests)
    for backend, indices in group_by_backend([b for b, _ in requests]):
        prompts = [requests[i][1] for i in indices]
        group = _rate_parsed(backend, prompts, params, retries)
        if backend.supports_logprobs:
            try:
                scores = backend.score_continuations(prompts, RATING_CANDIDATES)
            except NotImplementedError:
                scores = None
            if scores is not None:
                if len(scores) != len(prompts):
                    raise RuntimeError(f"{backend.model_name} scored {len(scores)} of {len(prompts)} prompts")
                group = [replace(r, expected=e, mass=m)
                         for r, (e, m) in zip(group, map(rating_expectation, scores), strict=True)]
        for i, r in zip(indices, group, strict=True):
            results[i] = r
    return [r for r in results if r is not None]


def rate_on_scale(requests: Sequence[RatingRequest], temperature: float, seed: int | None) -> list[RatingResult]:
    """Rate every (backend, prompt) request by one draw from p(" N" | prompt + "Rating:") over N in 1..7,
    renormalised, sharpened by `temperature` (0: the most probable N). The backends must give log-probs."""
    rng = np.random.default_rng(seed)
    results: list[RatingResult | None] = [None] * len(requests)
    for backend, indices in group_by_backend([b for b, _ in requests]):
        if not backend.supports_logprobs:
            raise ValueError(f"{backend.model_name} gives no log-probs: observer_replies 'scale' needs them "
                             "(use 'sampled')")
        prompts = [requests[i][1] for i in indices]
        scores = backend.score_continuations(prompts, RATING_CANDIDATES)
        if len(scores) != len(prompts):
            raise RuntimeError(f"{backend.model_name} scored {len(scores)} of {len(prompts)} prompts")
        for i, logprobs in zip(indices, scores, strict=True):
            results[i] = _scale_result(np.asarray(logprobs, dtype=np.float64), temperature, rng)
    return [r for r in results if r is not None]


def _scale_result(logprobs: np.ndarray, temperature: float, rng: np.random.Generator) -> RatingResult:
    expected, mass = rating_expectation(logprobs)
    if logprobs.shape != (7,) or not np.isfinite(logprobs).any():
        return RatingResult(None, None, None, "", f"no finite log-probs for the seven ratings: {logprobs.tolist()}",
                            1, 0, 0, None, None)
    lp = np.where(np.isfinite(logprobs), logprobs, -np.inf)
    if temperature == 0:
        value = int(np.argmax(lp)) + 1
    else:
        z = (lp - lp.max()) / temperature
        p = np.exp(z) / np.exp(z).sum()
        value = int(rng.choice(7, p=p)) + 1
    return RatingResult(float(value), value, SCALE, "", None, 1, 0, 0, expected, mass)


def _rate_parsed(backend: LLMBackend, prompts: list[PromptLike], params: GenerationParams,
                 retries: int) -> list[RatingResult]:
    n = len(prompts)
    last = [""] * n
    cost = [[0, 0, 0] for _ in range(n)]  # calls, prompt tokens, completion tokens
    parsed: list[tuple[int, str] | None] = [None] * n
    pending = list(range(n))
    attempt = 0
    while pending and attempt <= retries:
        # A fresh seed per attempt: a re-ask is a new sample, not a replay of the failed one.
        seed = None if params.seed is None else params.seed + attempt
        replies = generate_batched([(backend, prompts[i]) for i in pending], replace(params, seed=seed))
        attempt += 1
        for i, reply in zip(pending, replies, strict=True):
            last[i] = reply.text
            cost[i][0] += reply.calls
            cost[i][1] += reply.prompt_tokens
            cost[i][2] += reply.completion_tokens
            parsed[i] = parse_reply(prompts[i], reply.text)
        pending = [i for i in pending if parsed[i] is None]
    out = []
    for i in range(n):
        calls, p_tok, c_tok = cost[i]
        if parsed[i] is None:
            excerpt = last[i].strip()[:160]
            out.append(RatingResult(None, None, None, last[i].strip(), (
                f"no valid 'Rating: N' (N in 1..7) in {calls} replies; last reply: {excerpt!r}"), calls, p_tok, c_tok))
        else:
            value, reason = parsed[i]
            out.append(RatingResult(float(value), value, PARSED, reason, None, calls, p_tok, c_tok))
    return out


def mean_rating(values: Sequence[float | None]) -> float | None:
    """Mean over the non-NULL ratings; None when there are none."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None
