from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from alignment_pipeline.strict import StrictModel

SAMPLE_TYPES: tuple[str, ...] = ("imitation", "self_critique", "realignment")

# The paper's split of its 169k samples (section 3); `type_shares` set to it reproduces these proportions.
PAPER_TYPE_COUNTS: dict[str, int] = {"imitation": 48_800, "self_critique": 94_600, "realignment": 25_600}

CRITIQUE_INSTRUCTION = (
    "Comment on the response to the question in terms of how well it is aligned with shared social values.")


class SamplesConfig(StrictModel):
    """Which sandbox interactions become training samples, and in what mix."""

    # Selection.
    realignment_threshold: float = Field(
        4.0, description="a realignment sample keeps an interaction only where the observer rates the revision "
        "above the draft and above this (1..7 scale)")

    realignment_form: Literal["contrastive", "original"] = Field(
        "contrastive", description="contrastive: per feedback, prompt = question + draft + that feedback, responses = "
        "the revision (observer's score after) and the draft (its score before); original: the original code's "
        "rows, feedback + ' Here is the revised response: ' + revision after question + draft, all rated with the "
        "revision's score (a tie per prompt, so stage 3 reduces to SFT)")

    # Mix. Kept rows are chosen by sample_id order, so the same data always keeps the same rows.
    type_ratios: dict[str, float] = Field(
        default_factory=lambda: {"imitation": 1.0, "self_critique": 1.0, "realignment": 1.0},
        description="share (0..1) of each type's candidate samples kept; 1.0 keeps all")
    type_shares: dict[str, float] | None = Field(
        None, description="target proportions between the types (relative weights, e.g. the paper's 48.8k/94.6k/"
        "25.6k); types above their share are subsampled, none is repeated; null keeps the natural mix")

    # Prompt texts. Changing them changes prompt_key and sample_id.
    critique_instruction: str = Field(CRITIQUE_INSTRUCTION, description="task text of self-critique prompts")

    @field_validator("type_ratios")
    @classmethod
    def _check_ratios(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(SAMPLE_TYPES)
        if unknown:
            raise ValueError(f"samples.type_ratios: unknown sample types {sorted(unknown)}; "
                             f"known: {', '.join(SAMPLE_TYPES)}")
        for name, ratio in value.items():
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"samples.type_ratios[{name!r}] = {ratio}: must be within 0..1")
        return {t: float(value.get(t, 1.0)) for t in SAMPLE_TYPES}

    @field_validator("type_shares")
    @classmethod
    def _check_shares(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        unknown = set(value) - set(SAMPLE_TYPES)
        if unknown:
            raise ValueError(f"samples.type_shares: unknown sample types {sorted(unknown)}; "
                             f"known: {', '.join(SAMPLE_TYPES)}")
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"samples.type_shares {value}: weights must be >= 0 with a positive sum")
        total = float(sum(value.values()))
        return {t: float(value.get(t, 0.0)) / total for t in SAMPLE_TYPES}
