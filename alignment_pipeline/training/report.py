"""What a finished stage leaves behind for people: the loss-curve image and the model in MLflow's registry."""

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


def log_and_register(model_dir: Path, *, run_id: str, name: str, tags: dict[str, str]) -> str:
    """Log the saved model directory as the run's `model` artifact and register it as a new version of
    `name`, tagged with its lineage. Returns "name/version".

    The directory is logged as plain artifacts (it loads with `from_pretrained` after download) and the
    version is created with the registry client: this needs no network and no flavor-specific packaging."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=f"{mlflow.get_artifact_uri('model')}", run_id=run_id,
                                          tags=tags)
    return f"{name}/{version.version}"
