"""Interrupted training resumes to the same step count and loss curve with no batch used twice (a simulated
stop and a real SIGKILL mid-checkpoint-write), and a NaN loss stops the stage naming the step while the last
good checkpoint stays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import torch

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training import trainer as trainer_module
from alignment_pipeline.training.checkpointing import latest_checkpoint, list_checkpoints
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import NonFiniteLossError, TrainRequest, consumed_batches, train

BASE = "tiny:tiny-64"
# 48 groups, 4 per micro-batch, 2 micro-batches per step: 6 steps per epoch, 12 in all; checkpoints every 3.
CONFIG = TrainingConfig(learning_rate=3e-3, epochs=2, per_device_batch=4, grad_accum=2, max_length=64,
                        margin=1.0, save_every=3, keep_checkpoints=2, register_model=False, seed=0)
GROUPS = letter_groups(48, seed=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> HomeLayout:
    return HomeLayout(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def uninterrupted(home, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=CONFIG,
                                home=home, run_name="full"))
    return result, out


def _losses(run_id: str) -> list[float]:
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/loss")
    by_step: dict[int, float] = {}
    for m in sorted(history, key=lambda m: m.timestamp):
        by_step[m.step] = m.value  # a resumed run re-logs the steps after its checkpoint: the last value wins
    return [by_step[s] for s in sorted(by_step)]


def _assert_same_run(result, out, reference):
    ref_result, ref_out = reference
    assert result.completed and result.steps == ref_result.steps == 12
    batches = consumed_batches(out)
    ids = [(epoch, index) for _, epoch, index, _ in batches]
    assert len(ids) == len(set(ids)) == 24  # every batch of both epochs exactly once
    assert batches == consumed_batches(ref_out)  # same batches, same order, same steps
    ours, ref = _losses(result.mlflow_run_id), _losses(ref_result.mlflow_run_id)
    assert len(ours) == len(ref) == 12
    assert ours == pytest.approx(ref, rel=1e-4, abs=1e-5)  # the same loss curve
    assert not (out / "resume").exists()  # a finished stage leaves no optimizer state behind


def test_stop_and_resume_continues_the_same_curve(home, uninterrupted, tmp_path):
    out = tmp_path / "stopped"
    first = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=CONFIG,
                               home=home, run_name="stopped", stop_after_steps=7))
    assert not first.completed and first.steps == 7
    assert latest_checkpoint(out / "resume").name == "step-00000006"  # step 7 was lost, as in a kill
    assert mlflow.MlflowClient().get_run(first.mlflow_run_id).info.status == "KILLED"

    resumed = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=CONFIG,
                                 home=home, run_name="stopped"))
    assert resumed.mlflow_run_id == first.mlflow_run_id  # the same MLflow run continues
    _assert_same_run(resumed, out, uninterrupted)


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    real_replace = os.replace

    def replace_then_die(src, dst):
        # Killed while writing the checkpoint of step 9: its files are in a temporary directory, not renamed.
        if str(dst).endswith("step-00000009"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    os.replace = replace_then_die
    from pathlib import Path
    from alignment_pipeline.paths import HomeLayout
    from alignment_pipeline.training.trainer import TrainRequest, train
    sys.path.insert(0, {test_dir!r})
    from test_trainer_resume import BASE, CONFIG, GROUPS
    train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=Path({out!r}), config=CONFIG,
                       home=HomeLayout({home!r}), run_name="killed"))
    print("finished without being killed")
""")


def test_sigkill_mid_checkpoint_then_resume(home, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    script = _CHILD.format(test_dir=str(Path(__file__).parent), out=str(out), home=str(home.root))
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert [p.name for p in list_checkpoints(out / "resume")] == ["step-00000003", "step-00000006"]
    assert list((out / "resume").glob(".tmp-step-00000009-*"))  # the half-written one, never used

    resumed = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=CONFIG,
                                 home=home, run_name="killed"))
    _assert_same_run(resumed, out, uninterrupted)


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(home, tmp_path, monkeypatch):
    real = trainer_module.objective_loss
    calls = {"n": 0}

    def nan_on_ninth_call(*args, **kwargs):
        out, lp = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 9:  # step 5's first micro-batch (2 micro-batches per step)
            out = type(out)(loss=out.loss * float("nan"), n_prompts=out.n_prompts)
        return out, lp

    monkeypatch.setattr(trainer_module, "objective_loss", nan_on_ninth_call)
    out = tmp_path / "nan"
    config = CONFIG.model_copy(update={"save_every": 2})
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5 \(epoch 0, batch 8") as err:
        train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=config,
                           home=home, run_name="nan"))
    last = latest_checkpoint(out / "resume")
    assert last.name == "step-00000004" and str(last) in str(err.value)
    state = torch.load(last / "trainer_state.pt", weights_only=False)["state"]
    assert state["step"] == 4 and all(torch.isfinite(torch.tensor(h["train/loss"])) for h in state["history"])
    assert not (out / "model").exists()
    runs = mlflow.search_runs(experiment_names=["alignment_pipeline"], filter_string="attributes.run_name = 'nan'")
    assert runs["status"].tolist() == ["FAILED"]

    # The kept checkpoint resumes (the fault is gone) and finishes the stage.
    monkeypatch.setattr(trainer_module, "objective_loss", real)
    done = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=config,
                              home=home, run_name="nan"))
    assert done.completed and done.steps == 12
    assert json.loads((out / "train_result.json").read_text())["steps"] == 12


@pytest.mark.parametrize(("objective", "setting", "value"), [
    ("stable_alignment", "margin", 2.0), ("stable_alignment", "ratio", 0.5), ("stable_alignment", "aggregate", "max"),
    ("dpo", "dpo_beta", 0.3), ("sppo", "sppo_eta", 10.0), ("stable_alignment", "weight_decay", 0.1)])
def test_h_resume_refuses_changed_loss_settings(home, tmp_path, objective, setting, value):
    """A loss setting changed between a stopped run and its resume would train the second half on another
    objective: the resume refuses, naming the setting, and leaves the checkpoint for a resume without it."""
    out = tmp_path / "changed"
    config = CONFIG.model_copy(update={"max_steps": 4, "save_every": 2})
    request = dict(groups=GROUPS, objective=objective, base_model=BASE, out_dir=out, home=home, run_name="changed")
    first = train(TrainRequest(config=config, stop_after_steps=2, **request))
    assert not first.completed
    changed = config.model_copy(update={setting: value})
    before = config.model_dump()[setting]
    with pytest.raises(ValueError, match=rf"cannot resume .*{setting}: {before!r} -> {value!r}"):
        train(TrainRequest(config=changed, **request))
    assert latest_checkpoint(out / "resume").name == "step-00000002"
    # Settings that only say how the run is kept or shown, or that belong to another objective, may change.
    other = "sppo_eta" if objective == "dpo" else "dpo_beta"
    free = config.model_copy(update={"log_every": 2, "keep_checkpoints": 3, other: 0.5})
    done = train(TrainRequest(config=free, **request))
    assert done.completed and done.steps == 4
