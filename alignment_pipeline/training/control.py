"""The positive control's data: real human preference pairs (HH-RLHF test dialogues whose first question the
evaluation never uses, evaluation/hh_data.py `is_control`), as prompt groups the trainer reads like the society's.

If SFT and DPO on these cannot move the benchmarks beyond their intervals at the methods' budget, no method
trained on society data can be read as moving them either."""

from __future__ import annotations

from alignment_pipeline.training.data import PromptGroup

CONTROL_TYPE = "hh_control"
_REPLY_CUE = "\n\nAssistant:"


def control_groups() -> list[PromptGroup]:
    """One group per held-out dialogue: the dialogue up to its last assistant turn as the instruction, the chosen
    reply rated above the rejected one."""
    from alignment_pipeline.evaluation.hh_data import preference_docs

    groups = []
    for name, row, doc in preference_docs("control"):
        context = doc["context"].removesuffix(_REPLY_CUE).strip()
        groups.append(PromptGroup(instruction=context, input="", responses=[doc["chosen"], doc["rejected"]],
                                  ratings=[2.0, 1.0], key=f"{CONTROL_TYPE}:{name}:{row}"))
    return groups
