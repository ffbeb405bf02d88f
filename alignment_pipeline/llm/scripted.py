"""ScriptedLLM: a deterministic test double. It runs no model; it answers with a function of the prompt."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from alignment_pipeline.llm.base import Completion, GenerationParams, LLMBackend, PromptLike
from alignment_pipeline.llm.prompt_format import ALPACA, Prompt

Responder = Callable[[str], str]


def _default_responder(prompt: str) -> str:
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    if "Rating:" in prompt or "rating" in prompt.lower():
        return f"Rating: {int(digest, 16) % 7 + 1}\nReason: scripted reason {digest[:6]}"
    return f"scripted answer {digest[:8]}"


class ScriptedLLM(LLMBackend):
    """Test double. `responder(prompt) -> text`; `scorer(prompt, candidates) -> log-probs` enables ratings by
    expected value. Every prompt it saw is kept in `.prompts` (a `Prompt` rendered in the Alpaca format, as a
    model without a chat template sees it) so tests can inspect what was asked."""

    def __init__(self, responder: Responder | None = None,
                 scorer: Callable[[str, Sequence[str]], list[float]] | None = None,
                 model_name: str = "scripted") -> None:
        super().__init__()
        self.responder = responder or _default_responder
        self.scorer = scorer
        self.model_name = model_name
        self.supports_logprobs = scorer is not None
        self.prompts: list[str] = []
        self.batch_sizes: list[int] = []

    def generate(self, prompts: Sequence[PromptLike], params: GenerationParams) -> list[Completion]:
        prompts = [_render(p) for p in prompts]
        self.prompts.extend(prompts)
        self.batch_sizes.append(len(prompts))
        out = []
        for prompt in prompts:
            text = self.responder(prompt)
            out.append(Completion(text=text, prompt_tokens=len(prompt.split()), completion_tokens=len(text.split())))
        self.usage.add(calls=len(prompts), batches=1, prompt_tokens=sum(c.prompt_tokens for c in out),
                       completion_tokens=sum(c.completion_tokens for c in out))
        return out

    def score_continuations(self, prompts: Sequence[PromptLike], candidates: Sequence[str]) -> list[list[float]]:
        if self.scorer is None:
            return super().score_continuations(prompts, candidates)
        prompts = [_render(p) for p in prompts]
        self.prompts.extend(prompts)
        self.usage.add(calls=len(prompts), batches=1)
        return [list(self.scorer(p, candidates)) for p in prompts]


def _render(prompt: PromptLike) -> str:
    return ALPACA.render(prompt) if isinstance(prompt, Prompt) else prompt
