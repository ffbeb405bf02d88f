"""The one list of what gets trained: the paper's three curriculum stages, then the baselines of its table.

Every other place derives from `CHECKPOINTS`: the checkpoint assets and their dependencies, the benchmark
partitions (`MODELS`), the `checkpoint_kinds` table that `checkpoints.kind` is checked against, the torchrun
launcher's `--kind` choices. Adding a stage or a baseline is one entry here (plus its objective, if new).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignment_pipeline.training.config import TrainingConfig

#: which samples a checkpoint learns from: one sample type, or a rule the training config resolves
Samples = Literal["imitation", "self_critique", "realignment", "sft_source", "preference", "hh_control"]


@dataclass(frozen=True)
class Checkpoint:
    kind: str  # checkpoint kind, asset name and default checkpoint name
    role: Literal["stage", "baseline", "control"]
    objective: str  # training/objectives.py
    samples: Samples
    parent: str | None  # kind whose checkpoint this one starts from; None: the base model
    description: str
    best_only: bool = False  # each prompt group reduced to its best-rated response
    # Online optimisation against the reward model (rlhf: training/rlhf.py, TRL; sppo_online:
    # training/sppo_online.py): it depends on the reward_model asset, samples its own responses (the samples'
    # prompts are all it needs) and runs in one process.
    online: bool = False


CHECKPOINTS: tuple[Checkpoint, ...] = (
    Checkpoint("stage1_imitation", "stage", "stable_alignment", "imitation", None,
               "Stage 1 (IL): imitation samples, Stable Alignment loss, from the base model."),
    Checkpoint("stage2_self_critique", "stage", "sft", "self_critique", "stage1_imitation",
               "Stage 2 (IL+SC): self-critique samples, SFT (every neighbour's feedback is a target), from stage 1."),
    Checkpoint("stage3_realignment", "stage", "stable_alignment", "realignment", "stage2_self_critique",
               "Stage 3 (IL+SC+RA): realignment samples, Stable Alignment loss, from stage 2."),
    Checkpoint("sft", "baseline", "sft", "sft_source", None,
               "Baseline: SFT on the best-rated response of every prompt.", best_only=True),
    Checkpoint("dpo", "baseline", "dpo", "preference", None, "Baseline: DPO on (higher, lower)-rated pairs."),
    Checkpoint("sppo", "baseline", "sppo", "preference", None,
               "Baseline: SPPO on the society's responses (one offline iteration), win rates from the ratings."),
    Checkpoint("rlhf", "baseline", "rlhf", "preference", None,
               "Baseline: RLHF, RLOO policy optimisation against a reward model trained on the rated pairs.",
               online=True),
    Checkpoint("rrhf", "baseline", "rrhf", "preference", None,
               "Baseline: RRHF, a ranking loss on mean log-probs by rating plus SFT on the best response."),
    Checkpoint("coh", "baseline", "coh", "preference", None,
               "Baseline: Chain-of-Hindsight, SFT on responses after hindsight feedback, served after the positive "
               "feedback."),
    Checkpoint("sppo_online", "baseline", "sppo_online", "preference", None,
               "Baseline: SPPO, online: samples from the current policy, win rates from the reward model, over "
               "several iterations.", online=True),
    # The positive control: real human preference pairs instead of the society's, at the same budget, to show
    # whether the benchmarks can see any method move this model (training/control.py).
    Checkpoint("control_sft", "control", "sft", "hh_control", None,
               "Positive control: SFT on the chosen replies of HH-RLHF test dialogues held out of every HH task.",
               best_only=True),
    Checkpoint("control_dpo", "control", "dpo", "hh_control", None,
               "Positive control: DPO on chosen vs rejected replies of the same held-out HH-RLHF dialogues."),
)

CHECKPOINT_KINDS: tuple[str, ...] = tuple(c.kind for c in CHECKPOINTS)
#: what the benchmarks evaluate: the untrained base model, then every checkpoint
MODELS: tuple[str, ...] = ("base", *CHECKPOINT_KINDS)


def checkpoint(kind: str) -> Checkpoint:
    for entry in CHECKPOINTS:
        if entry.kind == kind:
            return entry
    raise ValueError(f"unknown checkpoint kind {kind!r}; choose one of {', '.join(CHECKPOINT_KINDS)}")


def sample_types(entry: Checkpoint, config: TrainingConfig) -> tuple[str, ...] | None:
    """The sample types a checkpoint trains on (None: every type)."""
    if entry.samples == "hh_control":  # not society samples: training/control.py
        return ("hh_control",)
    if entry.samples == "sft_source":
        return None if config.sft_baseline_source == "all" else ("imitation",)
    if entry.samples == "preference":
        # Preference baselines rank responses by rating; self-critique ratings rate the draft, not the feedback,
        # so by default those groups stay out (training.preference_baseline_types).
        return tuple(config.preference_baseline_types)
    return (entry.samples,)
