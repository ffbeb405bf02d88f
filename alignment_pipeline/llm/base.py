"""The one small interface every LLM backend offers: batched generation and continuation scoring."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from alignment_pipeline.llm.prompt_format import Prompt

#: a request: a `Prompt` (rendered in each model's own format) or text already rendered
PromptLike = Prompt | str


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Usage:
    """Counts what a backend did; read by the sandbox and benchmarks (calls, tokens, seconds, retries)."""

    calls: int = 0  # logical requests (one per prompt)
    batches: int = 0  # physical calls: one `generate` per batch on hf, one HTTP request on openai
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0

    def add(self, **counts: float) -> None:
        with _usage_lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict:
        return asdict(self)


_usage_lock = threading.Lock()


class LLMBackend(ABC):
    """`generate` takes a whole batch so that every backend can batch or parallelise it."""

    #: model name recorded with everything this backend produces
    model_name: str = "unknown"
    #: whether `score_continuations` is available (expected-value ratings need it)
    supports_logprobs: bool = False

    def __init__(self) -> None:
        self.usage = Usage()

    @abstractmethod
    def generate(self, prompts: Sequence[PromptLike], params: GenerationParams) -> list[Completion]:
        """One completion per prompt, in order: the reply after the prompt (and after its `prefix`)."""

    def score_continuations(self, prompts: Sequence[PromptLike], candidates: Sequence[str]) -> list[list[float]]:
        """log P(candidate | prompt, its prefix) for every prompt and candidate: [len(prompts), len(candidates)]."""
        raise NotImplementedError(f"{type(self).__name__} ({self.model_name}) gives no log-probabilities")

    def close(self) -> None:
        """Release resources (HTTP clients, GPU memory)."""
