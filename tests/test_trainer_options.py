"""Trainer options: LoRA (resumes from its adapter, ends as a merged plain model), gradient checkpointing (same
numbers, less memory kept), and DPO/SPPO reference log-probs (from the base model, cached, reused on resume)."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch
from transformers import AutoModelForCausalLM

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.objectives import preference_pairs
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, consumed_batches, resolve_base_model, train

BASE = "tiny:tiny-64"
CONFIG = TrainingConfig(learning_rate=3e-3, epochs=1, per_device_batch=4, max_length=64, margin=1.0,
                        save_every=2, register_model=False, sppo_eta=10.0, seed=0)
GROUPS = letter_groups(24, seed=8)  # 6 steps


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> HomeLayout:
    return HomeLayout(tmp_path_factory.mktemp("home"))


def _curve(run_id: str, metric: str = "train/loss") -> list[float]:
    by_step = {}
    for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, metric), key=lambda m: m.timestamp):
        by_step[m.step] = m.value
    return [by_step[s] for s in sorted(by_step)]


def test_lora_with_checkpointing_resumes_and_merges(home, tmp_path):
    config = CONFIG.model_copy(update={"lora": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                       "gradient_checkpointing": True})
    full = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=tmp_path / "full",
                              config=config, home=home, run_name="lora-full"))
    stopped = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=tmp_path / "r",
                                 config=config, home=home, run_name="lora-resumed", stop_after_steps=3))
    assert not stopped.completed and (stopped.checkpoint_path / "adapter_config.json").exists()
    resumed = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=tmp_path / "r",
                                 config=config, home=home, run_name="lora-resumed"))
    assert resumed.steps == full.steps == 6
    assert consumed_batches(tmp_path / "r") == consumed_batches(tmp_path / "full")
    assert _curve(resumed.mlflow_run_id) == pytest.approx(_curve(full.mlflow_run_id), rel=1e-4, abs=1e-5)
    # only the adapter trained, yet the saved model is a plain (merged) one that differs from the base
    assert not (resumed.checkpoint_path / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(resumed.checkpoint_path)
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model(BASE, home))
    diff = (merged.model.layers[0].self_attn.q_proj.weight - base.model.layers[0].self_attn.q_proj.weight).abs().max()
    assert diff > 0
    torch.testing.assert_close(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)  # not a LoRA target
    assert mlflow.MlflowClient().get_run(full.mlflow_run_id).data.params["n_trainable_params"] != \
        mlflow.MlflowClient().get_run(full.mlflow_run_id).data.params["n_params"]


def test_gradient_checkpointing_changes_no_numbers(home, tmp_path):
    plain = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=tmp_path / "a",
                               config=CONFIG, home=home, run_name="gc-off"))
    ckpt = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=tmp_path / "b",
                              config=CONFIG.model_copy(update={"gradient_checkpointing": True}), home=home,
                              run_name="gc-on"))
    assert _curve(ckpt.mlflow_run_id) == pytest.approx(_curve(plain.mlflow_run_id), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("objective", ["dpo", "sppo"])
def test_reference_is_the_base_model_and_survives_resume(objective, home, tmp_path):
    out = tmp_path / objective
    stopped = train(TrainRequest(GROUPS, objective=objective, base_model=BASE, out_dir=out, config=CONFIG, home=home,
                                 run_name=f"ref-{objective}", stop_after_steps=3))
    cache = torch.load(out / "reference_logps.pt", weights_only=True)
    assert stopped.metrics["reference_seconds"] > 0
    # At step 1 the policy IS the reference: DPO starts at log 2, SPPO at the mean squared target.
    first = _curve(stopped.mlflow_run_id)[0]
    if objective == "dpo":
        assert first == pytest.approx(math.log(2), abs=1e-5)
        n_pairs = len(preference_pairs(GROUPS))
        assert cache["logps"].shape == (n_pairs, 2)
    else:
        assert _curve(stopped.mlflow_run_id, "train/log_ratio")[0] == pytest.approx(0.0, abs=1e-4)
        assert cache["logps"].shape == (len(GROUPS), 3)
    mtime = (out / "reference_logps.pt").stat().st_mtime_ns
    resumed = train(TrainRequest(GROUPS, objective=objective, base_model=BASE, out_dir=out, config=CONFIG, home=home,
                                 run_name=f"ref-{objective}"))
    assert resumed.completed and resumed.metrics["reference_seconds"] == 0.0  # read back, not recomputed
    assert (out / "reference_logps.pt").stat().st_mtime_ns == mtime
    assert all(math.isfinite(v) for v in _curve(resumed.mlflow_run_id))


def test_resume_refuses_a_checkpoint_of_other_settings(home, tmp_path):
    out = tmp_path / "changed"
    train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=CONFIG, home=home,
                       run_name="changed", stop_after_steps=2))
    other = CONFIG.model_copy(update={"per_device_batch": 3})
    with pytest.raises(ValueError, match="cannot resume from .*step-00000002.*resume=False"):
        train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=other,
                           home=home, run_name="changed"))
    fresh = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=out, config=other,
                               home=home, run_name="changed", resume=False))
    assert fresh.completed and fresh.steps == 8
