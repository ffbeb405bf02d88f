"""The training settings an MLflow run of one objective logs as its parameters: those the objective reads, not
the other methods' (`dpo_beta` on a Stable Alignment stage) nor the sections that have runs of their own."""

from __future__ import annotations

from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.objectives import OBJECTIVES

# Settings of the Stable Alignment loss that carry no objective prefix (num_responses: the responses it compares).
_CONTRASTIVE = frozenset({"margin", "rating_scale", "ratio", "aggregate", "num_responses"})
# Which samples a baseline learns from is settled before the trainer runs; the run logs the batches it read.
_DATA_SELECTION = frozenset({"sft_baseline_source", "preference_baseline_types"})
# The reward model and the RLHF policy log these in their own runs.
_SECTIONS = frozenset({"reward_model", "rlhf"})
# The curriculum's first model: a run logs the model it started from itself.
_START = frozenset({"base_model"})
# How several processes cooperate: meaningless in a one-process run.
_DISTRIBUTED = frozenset({"strategy", "master_port", "distributed_timeout_s"})


def objective_params(config: TrainingConfig, objective: str) -> dict:
    """The settings of `config` that `objective`'s run depends on, by name. Left out: another objective's
    (`<objective>_...`), the contrastive loss's unless it is the one, the data selection of the baselines, the
    reward model and RLHF sections, LoRA's unless it is on, the multi-process ones in one process, unset ones, and
    the curriculum's base model (not the start of a chained stage)."""
    others = tuple(f"{o}_" for o in OBJECTIVES if o != objective)
    dropped = _DATA_SELECTION | _SECTIONS | _START
    if objective != "stable_alignment":
        dropped |= _CONTRASTIVE
    if config.nproc_per_node == 1:
        dropped |= _DISTRIBUTED
    return {k: v for k, v in config.model_dump().items()
            if k not in dropped and not k.startswith(others) and v is not None
            and (config.lora or not k.startswith("lora_"))}
