from __future__ import annotations

from pydantic import Field, field_validator

from alignment_pipeline.llm.config import SMOLLM2, BackendSpec
from alignment_pipeline.strict import StrictModel

# lm-eval benchmarks (see evaluation/catalog.py) and the judge-scored HH / HH-A.
DEFAULT_TASKS = ("truthfulqa_mc1", "ethics_cm", "moral_stories", "mic", "hh", "hh_a")


class EvaluationConfig(StrictModel):
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    limit: int | None = None  # lm-eval documents per task; None = all
    judge: BackendSpec = Field(default_factory=BackendSpec)
    batch_size: int = 8  # lm-eval batch size
    device: str = "auto"  # CUDA when present
    # HH / HH-A
    hh_limit: int | None = None  # harmful prompts per task; None = all
    max_new_tokens: int = 128  # answer length of the evaluated model
    generation_batch_size: int = 16
    judge_max_reasks: int = 2
    # JSONL files replacing the offline fixtures (then recorded as real data): {id, prompt} and {id, prefix}
    hh_prompts_file: str | None = None
    hh_prefixes_file: str | None = None

    @field_validator("limit", "hh_limit")
    @classmethod
    def _positive_limit(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be >= 1 or null, got {value}")
        return value

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"tasks must be distinct, got {value}")
        return value

    @classmethod
    def profile(cls, name: str) -> EvaluationConfig:
        if name == "paper":
            return cls(judge=BackendSpec(kind="openai", model="Qwen/Qwen2.5-72B-Instruct",
                                         base_url="http://localhost:8000/v1"),
                       max_new_tokens=256, generation_batch_size=32)
        if name == "small":
            return cls(judge=BackendSpec(model=SMOLLM2), limit=8, hh_limit=4, max_new_tokens=64)
        return cls(limit=8, hh_limit=4, max_new_tokens=24)
