from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.strict import StrictModel

# Multiple-choice tasks (evaluation/choice_tasks.py) and the judge-scored HH / HH-A (evaluation/judge.py).
DEFAULT_TASKS = ("truthfulqa_mc1", "ethics_cm", "ethics_cm_hard", "moral_stories", "hh_preference", "mic_proxy",
                 "hh", "hh_a")


class EvaluationConfig(StrictModel):
    """Benchmarks each trained model is scored on."""

    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS),
                             description="benchmarks run: multiple-choice tasks, hh and hh_a (judge-scored); any "
                                         "other name runs as an lm-eval built-in task (its dataset must be cached)")
    limit: int | None = Field(None, ge=1, description="items per multiple-choice task, a seeded sample that is the "
                                                      "same for every checkpoint; null: the whole split")
    seed: int = Field(0, description="seed of the item samples")
    min_items_for_claims: int = Field(200, ge=1, description="items a benchmark needs before its number carries a "
                                                             "claim; on fewer, the benchmark asset's check warns")
    batch_size: int = Field(8, ge=1, description="lm-eval batch size (built-in tasks of other names)")
    device: str = Field("auto", description="torch device of the evaluated model; auto: CUDA when present")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="dtype of the evaluated model: auto (bfloat16 on CUDA, float32 on CPU), "
                                           "float32 or bfloat16 (fast on CPUs with AMX; verdicts near a tie can differ "
                                           "from float32)")

    # HH / HH-A: the evaluated model answers, a judge scores (and compares with the base model's answer).
    judge: BackendSpec = Field(default_factory=BackendSpec, description="model rating the HH / HH-A answers")
    hh_limit: int | None = Field(None, ge=1, description="prompts per judge-scored task (seeded sample); null: all")
    max_new_tokens: int = Field(128, ge=1, description="answer length of the evaluated model, in tokens")
    generation_batch_size: int = Field(16, ge=1, description="prompts the evaluated model answers together")
    judge_max_reasks: int = Field(2, ge=0, description="re-asks of the judge when its score cannot be parsed")
    pairwise: bool = Field(True, description="judge each answer against the base model's, in both orders")

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"tasks must be distinct, got {value}")
        return value
