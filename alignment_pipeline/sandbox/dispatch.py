"""Issue one phase's requests as batches: one `generate` per distinct backend, however many agents share it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from alignment_pipeline.llm.base import GenerationParams, LLMBackend, PromptLike

Request = tuple[LLMBackend, PromptLike]


@dataclass
class Reply:
    """A request's final text and what it cost, re-asks included."""

    text: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def group_by_backend(backends: Sequence[LLMBackend]) -> list[tuple[LLMBackend, list[int]]]:
    """Indices of the requests per backend instance, in first-seen order."""
    groups: dict[int, tuple[LLMBackend, list[int]]] = {}
    for i, backend in enumerate(backends):
        groups.setdefault(id(backend), (backend, []))[1].append(i)
    return list(groups.values())


def generate_batched(requests: Sequence[Request], params: GenerationParams) -> list[Reply]:
    """One `generate` call per backend over all of that backend's prompts; replies in request order."""
    replies: list[Reply | None] = [None] * len(requests)
    for backend, indices in group_by_backend([b for b, _ in requests]):
        completions = backend.generate([requests[i][1] for i in indices], params)
        if len(completions) != len(indices):
            raise RuntimeError(f"{backend.model_name} returned {len(completions)} completions "
                               f"for {len(indices)} prompts")
        for i, c in zip(indices, completions, strict=True):
            replies[i] = Reply(c.text, 1, c.prompt_tokens, c.completion_tokens)
    return [r for r in replies if r is not None]


def generate_nonempty(requests: Sequence[Request], params: GenerationParams, retries: int,
                      clean: Callable[[str], str] = str.strip) -> list[Reply]:
    """Like `generate_batched` with each reply passed through `clean`, re-asking (batched) only the requests
    whose cleaned reply is blank, at most `retries` times; a reply still blank after that is returned blank
    and caught by the data checks."""
    replies = generate_batched(requests, params)
    for r in replies:
        r.text = clean(r.text)
    blank = [i for i, r in enumerate(replies) if not r.text.strip()]
    for attempt in range(1, retries + 1):
        if not blank:
            break
        # A fresh seed: a re-ask is a new sample, not a replay of the blank one.
        seed = None if params.seed is None else params.seed + attempt
        again = generate_batched([requests[i] for i in blank], replace(params, seed=seed))
        for i, r in zip(blank, again, strict=True):
            old = replies[i]
            replies[i] = Reply(clean(r.text), old.calls + r.calls, old.prompt_tokens + r.prompt_tokens,
                               old.completion_tokens + r.completion_tokens)
        blank = [i for i in blank if not replies[i].text.strip()]
    for r in replies:
        r.text = r.text.strip()
    return replies
