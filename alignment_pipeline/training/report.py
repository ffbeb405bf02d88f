"""What a finished stage leaves behind for people: the loss-curve image and its model's name in MLflow's registry
(the registration itself: tracking.log_and_register)."""

from __future__ import annotations

import re
from pathlib import Path

_COMPONENTS = ("loss", "sft", "hinge")


def plot_loss_curve(history: list[dict], out_png: Path, *, title: str) -> Path:
    """Loss (and its SFT/hinge components where present) per optimizer step, as a PNG."""
    out_png.parent.mkdir(parents=True, exist_ok=True)
    loss_curve_figure(history, title=title).savefig(out_png)
    return out_png


def loss_curve_figure(history: list[dict], *, title: str):
    """The loss-curve figure. Every step is a marker too, so a stage of one step shows its point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    from alignment_pipeline.images import wrapped_title

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    steps = [h["step"] for h in history]
    for name in _COMPONENTS:
        values = [h.get(f"train/{name}") for h in history]
        if steps and all(v is not None for v in values):
            ax.plot(steps, values, label=name, linewidth=1.5 if name == "loss" else 1.0, marker="o",
                    markersize=4 if len(steps) < 50 else 1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(wrapped_title(title if steps else f"{title}: no steps"))
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


REGISTERED_MODEL_PREFIX = "alignment-pipeline-"


def registered_model_name(run_name: str) -> str:
    """The registry name of a stage's model: the project prefix and the run name (e.g.
    `alignment-pipeline-dpo`), so that the stages' models do not collide with other projects' `dpo` or `sft`
    in a shared registry. Letters, digits, `_`, `.` and `-` only (MLflow refuses `/` and `:`; these also suit
    registries that are stricter)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name).strip("-") or "model"
    return name if name.startswith(REGISTERED_MODEL_PREFIX) else REGISTERED_MODEL_PREFIX + name


_OBJECTIVE_NAMES = {"stable_alignment": "Stable Alignment loss", "sft": "SFT", "dpo": "DPO", "sppo": "SPPO",
                    "rrhf": "RRHF", "coh": "Chain-of-Hindsight", "rlhf": "RLHF (RLOO against the reward model)",
                    "sppo_online": "SPPO (online: samples of the current policy, win rates from the reward model)"}
# What one training example of an objective is (training/objectives.py training_groups).
_EXAMPLES = {"dpo": "preference pairs", "coh": "hindsight chains", "rlhf": "prompts"}


def model_description(name: str, objective: str, *, groups: int, batches: list[str], steps: int, base_model: str,
                      metrics: dict | None = None) -> str:
    """The registry's description of a stage's model: the objective, the data, the steps and the starting model;
    for a Stable Alignment stage that trained as plain SFT, that too."""
    from alignment_pipeline.training.checks import contrastive_fallback

    examples = _EXAMPLES.get(objective, "prompt groups")
    # No samples batch: data from outside the society (the positive control's HH-RLHF pairs).
    data = (f"{groups} {examples} of samples batch{'es' if len(batches) != 1 else ''} {', '.join(batches)}"
            if batches else f"{groups} {examples} from outside the society's samples")
    text = (f"{name}: {_OBJECTIVE_NAMES.get(objective, objective)} on {data}; "
            f"{steps} optimizer step{'' if steps == 1 else 's'} from {base_model}.")
    if objective == "stable_alignment" and metrics is not None:
        fallback = contrastive_fallback(metrics)
        if fallback:
            text += f" It {fallback}."
    return text
