"""A corrupt resume checkpoint is detected (checksum, or a load test for one without a manifest), named, set
aside, and training resumes from the good one before it; a resumed run logs each metric step once."""

from __future__ import annotations

import json
import logging

import mlflow
import pytest

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training import checkpointing as ckpt
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Saves:
    """Stands in for a model or tokenizer: writes one file of its own."""

    def __init__(self, name: str, payload: bytes) -> None:
        self.name, self.payload = name, payload

    def save_pretrained(self, directory) -> None:
        (directory / self.name).write_bytes(self.payload)


class _Stateful:
    def state_dict(self) -> dict:
        return {"lr": 0.1}


def _save(root, step: int):
    return ckpt.save_checkpoint(root, _Saves("model.safetensors", bytes(range(256)) * 64),
                                _Saves("tokenizer.json", b"{}"), _Stateful(), _Stateful(),
                                ckpt.TrainState(step=step), keep=5)


def test_every_checkpoint_carries_a_manifest_of_its_files(tmp_path):
    saved = _save(tmp_path, 1)
    manifest = json.loads((saved / ckpt.MANIFEST_FILE).read_text())
    assert set(manifest) == {"model.safetensors", "tokenizer.json", ckpt.STATE_FILE}
    assert manifest["model.safetensors"][0] == 256 * 64
    assert ckpt.checkpoint_problem(saved) is None


@pytest.mark.parametrize("damage, named", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "model.safetensors is 100 bytes"),
    (lambda p: p.write_bytes(b"\xff" + p.read_bytes()[1:]), "model.safetensors does not match its checksum"),
    (lambda p: p.unlink(), "model.safetensors is missing"),
])
def test_a_damaged_checkpoint_is_named_set_aside_and_the_one_before_used(tmp_path, caplog, damage, named):
    first, second = _save(tmp_path, 3), _save(tmp_path, 6)
    damage(second / "model.safetensors")
    caplog.set_level(logging.WARNING, logger="alignment_pipeline.training")
    assert ckpt.latest_checkpoint(tmp_path) == second  # without verifying: only completeness
    assert ckpt.latest_checkpoint(tmp_path, verify=True) == first
    assert not second.exists() and (tmp_path / "corrupt-step-00000006").is_dir()
    assert ckpt.list_checkpoints(tmp_path) == [first]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "step-00000006" in warning and named in warning and "corrupt-step-00000006" in warning


def test_a_checkpoint_without_manifest_gets_a_load_test(tmp_path):
    first, second = _save(tmp_path, 3), _save(tmp_path, 6)
    (second / ckpt.MANIFEST_FILE).unlink()
    assert ckpt.checkpoint_problem(second) is None  # written before manifests, and whole
    (second / ckpt.STATE_FILE).write_bytes(b"not a torch file")
    assert "does not load" in ckpt.checkpoint_problem(second)
    assert ckpt.latest_checkpoint(tmp_path, verify=True) == first
    (first / ckpt.STATE_FILE).write_bytes(b"")
    assert ckpt.latest_checkpoint(tmp_path, verify=True) is None  # nothing good left: train afresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt-step-00000003", "corrupt-step-00000006"]


# 24 groups, 4 per micro-batch, 2 per step: 3 steps per epoch, 6 in all; checkpoints every 2 steps.
CONFIG = TrainingConfig(learning_rate=3e-3, epochs=2, per_device_batch=4, grad_accum=2, max_length=48, margin=1.0,
                        save_every=2, keep_checkpoints=3, register_model=False, seed=0)
GROUPS = letter_groups(24, seed=5)


def test_training_resumes_past_a_corrupt_checkpoint_and_logs_each_step_once(tmp_path):
    home, out = HomeLayout(tmp_path / "home"), tmp_path / "stage"

    def request(**extra) -> TrainRequest:
        return TrainRequest(GROUPS, objective="stable_alignment", base_model="tiny:tiny-64", out_dir=out,
                            config=CONFIG, home=home, run_name="corrupt", **extra)

    first = train(request(stop_after_steps=5))
    assert not first.completed and first.steps == 5
    newest = ckpt.latest_checkpoint(out / "resume")
    assert newest.name == "step-00000004"
    weights = next(newest.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # same size, other bytes

    resumed = train(request())
    assert resumed.completed and resumed.steps == 6
    assert resumed.mlflow_run_id == first.mlflow_run_id
    history = mlflow.MlflowClient().get_metric_history(resumed.mlflow_run_id, "train/loss")
    steps = sorted(m.step for m in history)
    assert steps == [1, 2, 3, 4, 5, 6], steps  # steps 3-5 trained twice, logged once


def test_a_corrupt_checkpoint_is_kept_aside_until_the_stage_finishes(tmp_path):
    home, out = HomeLayout(tmp_path / "home"), tmp_path / "stage"
    request = TrainRequest(GROUPS, objective="stable_alignment", base_model="tiny:tiny-64", out_dir=out,
                           config=CONFIG, home=home, run_name="aside", stop_after_steps=3)
    train(request)
    newest = ckpt.latest_checkpoint(out / "resume")
    (newest / ckpt.STATE_FILE).write_bytes(b"truncated")
    again = train(request)  # nothing good left: trained afresh to the same stop
    assert again.steps == 3 and not again.completed
    assert (out / "resume" / f"corrupt-{newest.name}").is_dir()
