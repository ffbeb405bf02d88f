from __future__ import annotations

from pydantic import Field, field_validator

from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.strict import StrictModel

# lm-eval benchmarks (see evaluation/catalog.py) and the judge-scored HH / HH-A.
DEFAULT_TASKS = ("truthfulqa_mc1", "ethics_cm", "moral_stories", "mic", "hh", "hh_a")


class EvaluationConfig(StrictModel):
    """Benchmarks each trained model is scored on."""

    # lm-eval benchmarks.
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS),
                             description="benchmarks run, lm-eval names plus hh and hh_a (judge-scored)")
    limit: int | None = Field(None, ge=1, description="lm-eval documents per task; null: all")
    batch_size: int = Field(8, ge=1, description="lm-eval batch size")
    device: str = Field("auto", description="torch device of the evaluated model; auto: CUDA when present")

    # HH / HH-A: the evaluated model answers harmful prompts (HH-A: after an adversarial prefix), a judge rates.
    judge: BackendSpec = Field(default_factory=BackendSpec, description="model rating the HH / HH-A answers")
    hh_limit: int | None = Field(None, ge=1, description="harmful prompts per task; null: all")
    max_new_tokens: int = Field(128, ge=1, description="answer length of the evaluated model, in tokens")
    generation_batch_size: int = Field(16, ge=1, description="prompts the evaluated model answers together")
    judge_max_reasks: int = Field(2, ge=0, description="re-asks of the judge when its verdict cannot be parsed")
    # JSONL files replacing the offline fixtures (then recorded as real data).
    hh_prompts_file: str | None = Field(None, description="JSONL of {id, prompt}; null: the offline fixture")
    hh_prefixes_file: str | None = Field(None, description="JSONL of {id, prefix} for HH-A; null: the offline "
                                         "fixture")

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"tasks must be distinct, got {value}")
        return value
