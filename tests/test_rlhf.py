"""The RLHF baseline: RLOO (TRL) against a reward model, dispatched by train_stage for objective rlhf and recorded
like every checkpoint; prompts are tokenised as the contrastive trainer tokenises them."""

from __future__ import annotations

import json
import random

import pytest

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import RewardModelConfig, RLHFConfig, TrainingConfig
from alignment_pipeline.training.data import PromptGroup
from alignment_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _groups(n: int) -> list[PromptGroup]:
    rng = random.Random(0)
    return [PromptGroup(f"Say something {i}", "", ["".join(rng.choice("aeiou") for _ in range(6)),
                                                   "".join(rng.choice("bcdfg") for _ in range(6))], [6.0, 2.0],
                        key=f"imitation:p{i}", batches=("b1",)) for i in range(n)]


def test_rlhf_runs_rloo_steps_and_records_a_checkpoint(tmp_path):
    from alignment_pipeline.training.curriculum import spec_for, train_stage
    from alignment_pipeline.training.lineage import checkpoint_row
    from alignment_pipeline.training.reward_model import record_reward_model, train_reward_model

    home = HomeLayout(tmp_path / "home")
    wh = Warehouse(tmp_path / "w.duckdb")
    config = TrainingConfig(base_model="tiny:tiny-64", max_length=64, seed=0, max_steps=3, register_model=False,
                            reward_model=RewardModelConfig(max_steps=2, per_device_batch=4),
                            rlhf=RLHFConfig(num_generations=2, prompts_per_step=2, max_completion_length=8,
                                            learning_rate=1e-3))
    groups = _groups(8)
    spec = spec_for("rlhf", config)
    with pytest.raises(ValueError, match="needs a reward model"):
        train_stage(wh, spec, base_model=config.base_model, parent_checkpoint=None, config=config, home=home,
                    groups=groups)
    rm = train_reward_model(groups, config=config, home=home)
    record_reward_model(wh, rm, base_model=config.base_model)

    result = train_stage(wh, spec, base_model=config.base_model, parent_checkpoint=None, config=config, home=home,
                         groups=groups)
    assert result.steps == 3
    assert (result.checkpoint_path / "config.json").is_file()
    assert result.metrics["reward_mean_last"] is not None and result.metrics["kl_last"] is not None
    row = checkpoint_row(wh, "rlhf")
    assert row["kind"] == "rlhf" and row["objective"] == "rlhf" and row["steps"] == 3
    assert row["path"] == str(result.checkpoint_path) and row["mlflow_run_id"] == result.mlflow_run_id
    assert json.loads(row["metrics"])["prompts"] == 8

    import mlflow

    run = mlflow.MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.params["reward_model_path"] == str(rm.path)
    assert "train/reward" in run.data.metrics and "train/kl" in run.data.metrics


def test_prompts_are_tokenised_like_the_trainer(tmp_path):
    """No EOS appended to the prompt (the byte-level tokenizer adds one by default), the left cut keeps the end."""
    from transformers import ByT5Tokenizer

    from alignment_pipeline.llm.prompt_format import Prompt, prompt_format
    from alignment_pipeline.training.rlhf import _trainer_class, rlhf_prompts

    tok = ByT5Tokenizer()
    cls = _trainer_class()
    trainer = cls.__new__(cls)
    trainer.processing_class = tok
    cls.prompt_prefix, cls.max_prompt_tokens = [], 10
    text = prompt_format(tok).render(Prompt("hello there"))
    (ids,), _, _ = trainer._tokenize_prompts([text])
    assert ids == tok(text, add_special_tokens=False)["input_ids"][-10:]
    assert tok.eos_token_id not in ids
    assert [p.instruction for p in rlhf_prompts(_groups(3) + _groups(2))] == [f"Say something {i}" for i in range(3)]


def test_rlhf_refuses_a_missing_reward_model_and_a_too_long_completion(tmp_path):
    from alignment_pipeline.training.rlhf import train_rlhf

    home = HomeLayout(tmp_path / "home")
    with pytest.raises(ValueError, match="no reward model at"):
        train_rlhf(_groups(2), reward_model_path=tmp_path / "none", base_model="tiny:tiny-64",
                   config=TrainingConfig(), home=home, out_dir=tmp_path / "o")
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="leaves .* prompt tokens"):
        train_rlhf(_groups(2), reward_model_path=tmp_path / "rm", base_model="tiny:tiny-64",
                   config=TrainingConfig(max_length=64, rlhf=RLHFConfig(max_completion_length=60)), home=home,
                   out_dir=tmp_path / "o")
