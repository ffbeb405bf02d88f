"""Checks of the training outputs (checkpoints and the reward model) as CheckOutcome values. They warn where a
step ran but degenerated: recorded as not trained, a contrastive stage that trained as plain SFT, a reward model
judged on too few held-out pairs. Nothing here blocks: the curriculum and the benchmarks still run."""

from __future__ import annotations

import json

from alignment_pipeline.checks import Check, CheckOutcome
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.lineage import checkpoint_row
from alignment_pipeline.warehouse.db import Warehouse

#: the objective whose loss has a contrastive hinge (training/losses.py stable_alignment_loss)
CONTRASTIVE = "stable_alignment"


def _metrics(row: dict) -> dict:
    return json.loads(row["metrics"]) if row.get("metrics") else {}


def _groups(n: int, what: str) -> str:
    return f"{n} {what} group" + ("" if n == 1 else "s")


def contrastive_fallback(metrics: dict) -> str | None:
    """Why a Stable Alignment stage trained as plain SFT on its best responses, from its recorded metrics, or None
    when the hinge had something to compare and fired. Groups of one response, or of responses all rated alike,
    give the hinge nothing to rank; a hinge that never exceeded zero left only the SFT term."""
    groups = int(metrics.get("groups") or 0)
    if metrics.get("groups_multi_response_share") == 0:
        return f"fell back to SFT: {_groups(groups, 'single-response')}"
    if metrics.get("groups_ranked_share") == 0:
        return f"fell back to SFT: {_groups(groups, 'equally rated')}"
    fired = metrics.get("hinge_fired_steps")
    if fired is None:  # recorded before the count existed: the last step's terms
        fired = int(bool(metrics.get("hinge") or metrics.get("active_margin_share")))
    if fired == 0:
        return f"fell back to SFT: the hinge never fired in {metrics.get('steps', 0)} steps"
    return None


def what_ran(row: dict | None) -> str:
    """One line saying what a checkpoint's training actually was: not trained (and why), the objective as
    described, or the SFT a contrastive stage fell back to."""
    if row is None:
        return "not trained: no checkpoints row"
    if row.get("note"):
        return f"not trained: {row['note']}"
    steps = f"{row['steps']} optimizer step" + ("" if row["steps"] == 1 else "s")
    if row["objective"] == CONTRASTIVE:
        fallback = contrastive_fallback(_metrics(row))
        return f"{fallback} ({steps})" if fallback else f"Stable Alignment loss, hinge active ({steps})"
    return f"{row['objective']} ({steps})"


def check_checkpoint_trained(warehouse: Warehouse, checkpoint: str) -> CheckOutcome:
    """The checkpoint was trained: its `checkpoints` row has no note and at least one optimizer step. A checkpoint
    recorded as not trained (too little data of its kind) is its starting model unchanged: a warning, with why."""
    row = checkpoint_row(warehouse, checkpoint)
    if row is None or row.get("note") or not row["steps"]:
        return CheckOutcome(passed=False, severity="WARN", description=what_ran(row),
                            metadata={"checkpoint": checkpoint, "steps": 0 if row is None else row["steps"],
                                      "note": (row or {}).get("note") or "no checkpoints row"})
    return CheckOutcome(passed=True, description=f"trained: {what_ran(row)}",
                        metadata={"checkpoint": checkpoint, "steps": row["steps"]})


def check_contrastive(warehouse: Warehouse, checkpoint: str) -> CheckOutcome:
    """A Stable Alignment stage compared responses: some prompt groups hold several differently rated responses
    and the hinge fired on at least one step. Otherwise the stage trained as plain SFT on its best responses
    (a warning saying so). Passes, as not applicable, for other objectives and untrained checkpoints."""
    row = checkpoint_row(warehouse, checkpoint)
    if row is None or row.get("note") or row["objective"] != CONTRASTIVE:
        why = "not trained" if row is None or row.get("note") else f"objective {row['objective']} has no hinge"
        return CheckOutcome(passed=True, description=f"not applicable: {why}",
                            metadata={"checkpoint": checkpoint, "applicable": False})
    metrics = _metrics(row)
    fallback = contrastive_fallback(metrics)
    keys = ("groups", "groups_multi_response_share", "groups_ranked_share", "hinge_fired_steps", "hinge",
            "active_margin_share")
    return CheckOutcome(passed=fallback is None, severity="WARN",
                        description=fallback or f"the hinge fired on {metrics.get('hinge_fired_steps', 'some')} of "
                                                f"{row['steps']} steps",
                        metadata={"checkpoint": checkpoint, "steps": row["steps"],
                                  **{k: metrics[k] for k in keys if metrics.get(k) is not None}})


def check_reward_model_trained(warehouse: Warehouse, not_trained: str | None = None) -> CheckOutcome:
    """A reward model is recorded in `reward_models`. Without one (too few rated pairs), the RLHF baseline is not
    trained either: a warning, with why."""
    from alignment_pipeline.training.reward_model import reward_model_row

    row = reward_model_row(warehouse)
    if row is None or not row["steps"]:
        why = not_trained or ("recorded with 0 steps" if row is not None else "no reward_models row")
        return CheckOutcome(passed=False, severity="WARN", description=f"not trained: {why}",
                            metadata={"steps": 0, "note": why})
    return CheckOutcome(passed=True, description=f"trained: {row['steps']} optimizer steps",
                        metadata={"steps": row["steps"]})


def heldout_pairs(metrics: dict) -> int:
    """Held-out pairs the reward model was judged on (older rows carry them as `model_heldout_pairs` only)."""
    return int(metrics.get("heldout_pairs", metrics.get("model_heldout_pairs")) or 0)


def check_heldout_pairs(warehouse: Warehouse, config: TrainingConfig) -> CheckOutcome:
    """The reward model's held-out pair accuracy rests on at least `training.reward_model.min_heldout_pairs`
    pairs; on fewer it says little about the model (a warning). Passes, as not applicable, without a model."""
    from alignment_pipeline.training.reward_model import reward_model_row

    bar = config.reward_model.min_heldout_pairs
    row = reward_model_row(warehouse)
    if row is None:
        return CheckOutcome(passed=True, description="not applicable: no reward model",
                            metadata={"applicable": False, "min_heldout_pairs": bar})
    metrics = _metrics(row)
    n, accuracy = heldout_pairs(metrics), metrics.get("heldout_accuracy")
    shown = "none" if accuracy is None else f"{accuracy:.2f}"
    return CheckOutcome(
        passed=n >= bar, severity="WARN",
        description=f"held-out accuracy {shown} on {n} pair{'' if n == 1 else 's'} (bar {bar})",
        metadata={"heldout_pairs": n, "min_heldout_pairs": bar,
                  **({"heldout_accuracy": round(accuracy, 3)} if accuracy is not None else {})})


CHECKPOINT_CHECKS: tuple[Check, ...] = (
    Check("trained", check_checkpoint_trained),
    Check("contrastive", check_contrastive),
)
REWARD_MODEL_CHECKS: tuple[Check, ...] = (
    Check("trained", check_reward_model_trained),
    Check("heldout_pairs", check_heldout_pairs),
)
