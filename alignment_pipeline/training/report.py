"""What a finished stage leaves behind for people: the loss-curve image and its model's name in MLflow's registry
(the registration itself: tracking.log_and_register)."""

from __future__ import annotations

import re
from pathlib import Path

_COMPONENTS = ("loss", "sft", "hinge")


def plot_loss_curve(history: list[dict], out_png: Path, *, title: str) -> Path:
    """Loss (and its SFT/hinge components where present) per optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [h["step"] for h in history]
    for name in _COMPONENTS:
        values = [h.get(f"train/{name}") for h in history]
        if steps and all(v is not None for v in values):
            ax.plot(steps, values, label=name, linewidth=1.5 if name == "loss" else 1.0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


REGISTERED_MODEL_PREFIX = "alignment-pipeline-"


def registered_model_name(run_name: str) -> str:
    """The registry name of a stage's model: the project prefix and the run name (e.g.
    `alignment-pipeline-dpo`), so that the stages' models do not collide with other projects' `dpo` or `sft`
    in a shared registry. Letters, digits, `_`, `.` and `-` only (MLflow refuses `/` and `:`; these also suit
    registries that are stricter)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name).strip("-") or "model"
    return name if name.startswith(REGISTERED_MODEL_PREFIX) else REGISTERED_MODEL_PREFIX + name
