"""Each objective's learning rate chosen by a short sweep scored on held-out prompts (training/sweep.py)."""

from __future__ import annotations

import math

import pytest

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup
from alignment_pipeline.training.sweep import (
    SWEEP_DIR,
    capped_prompts,
    chosen_config,
    maybe_sweep,
    split_heldout,
    sweep_learning_rate,
    sweep_params,
    validation_loss,
)
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, train

BASE = "tiny:tiny-llama"
GROUPS = letter_groups(32, seed=5)
# Short trials on short sequences; a constant rate, so a trial's steps all run at the candidate.
SMALL = dict(per_device_batch=8, max_length=64, warmup_ratio=0.0, lr_scheduler="constant_with_warmup",
             lr_sweep_steps=4, lr_sweep_heldout_share=0.25, register_model=False, save_every=1000, seed=0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def layout(tmp_path) -> HomeLayout:
    return HomeLayout(tmp_path / "home")


def _prompts(groups: list[PromptGroup]) -> set[tuple[str, str]]:
    return {(g.instruction, g.input) for g in groups}


# -- the split -----------------------------------------------------------------------------------------------------

def test_split_is_disjoint_by_prompt_and_deterministic():
    # a prompt with two groups (two sample types) must land on one side with both
    twin = PromptGroup(GROUPS[0].instruction, "", ["x"], [3.0], key="other-type:0")
    groups = [*GROUPS, twin]
    train_part, held = split_heldout(groups, 0.25, seed=0)
    assert not _prompts(train_part) & _prompts(held)
    assert len(train_part) + len(held) == len(groups) and len(_prompts(held)) == 8  # round(0.25 × 32)
    assert split_heldout(groups, 0.25, seed=0) == (train_part, held)
    assert split_heldout(list(reversed(groups)), 0.25, seed=0)[1] == list(reversed(held))  # by prompt, not position
    assert _prompts(split_heldout(groups, 0.25, seed=1)[1]) != _prompts(held)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_heldout(groups, 0.0, seed=0)


def test_the_held_out_cap_keeps_every_group_of_its_first_prompts():
    twin = PromptGroup(GROUPS[0].instruction, "", ["x"], [3.0], key="other-type:0")
    groups = [GROUPS[0], GROUPS[1], twin, GROUPS[2], GROUPS[3]]
    assert capped_prompts(groups, None) == groups
    assert capped_prompts(groups, 2) == [GROUPS[0], GROUPS[1], twin]
    assert capped_prompts(groups, 10) == groups


def test_a_capped_sweep_scores_only_the_capped_prompts(layout):
    config = TrainingConfig(**{**SMALL, "lr_sweep_steps": 1}, sft_learning_rate=3e-3, lr_sweep=[1.0],
                            lr_sweep_heldout_max=3)
    result = sweep_learning_rate(GROUPS, "sft", BASE, config, layout)
    assert result.heldout_groups == 3 and result.train_groups == 24  # the other 5 held out stay out of the trials
    _, held = split_heldout(GROUPS, 0.25, config.seed)
    assert validation_loss(BASE, held[:3], "sft", config, home=layout) == pytest.approx(result.start_loss, rel=1e-5)


# -- the sweep -----------------------------------------------------------------------------------------------------

def test_sweep_trains_each_rate_and_picks_the_lowest_held_out_loss(layout):
    # SFT at 3e-3 learns the letters in four steps; a thousandth of it leaves the model where it started.
    config = TrainingConfig(**SMALL, sft_learning_rate=3e-3, lr_sweep=[1e-3, 1.0])
    result = sweep_learning_rate(GROUPS, "sft", BASE, config, layout)

    print(f"\nheld-out SFT loss: start {result.start_loss:.4f}, "
          + ", ".join(f"{r:g}: {v:.4f}" for r, v in zip(result.rates, result.val_losses, strict=True)))
    assert result.rates == pytest.approx([3e-6, 3e-3])
    assert result.steps == [4, 4]
    assert result.chosen == pytest.approx(3e-3)
    tiny, learned = result.val_losses
    assert learned < result.start_loss - 0.5  # the rate that learns clearly wins
    assert tiny == pytest.approx(result.start_loss, abs=0.05)
    assert result.heldout_groups == 8 and result.train_groups == 24
    # the trials leave no folder, no MLflow store and no registered model behind
    assert not (layout.checkpoints / SWEEP_DIR).exists()
    assert not layout.mlflow_db.exists()
    # the starting model's held-out loss, as the public scorer computes it
    _, held = split_heldout(GROUPS, 0.25, config.seed)
    assert validation_loss(BASE, held, "sft", config, home=layout) == pytest.approx(result.start_loss, rel=1e-5)

    params = sweep_params(result)
    assert params["lr_sweep/rates"] == "3e-06,0.003" and params["lr_sweep/chosen"] == pytest.approx(3e-3)
    assert params["lr_sweep/val_loss:3e-06"] == tiny and params["lr_sweep/val_loss:0.003"] == learned
    assert params["lr_sweep/steps"] == "4,4"


def test_ties_go_to_the_rate_closer_to_the_published_one():
    from alignment_pipeline.training.sweep import _choose

    assert _choose([1e-7, 1e-6, 1e-5], [1.0, 1.0, 1.0], published=1e-6) == 1e-6
    assert _choose([1e-4, 1e-8], [0.5, 0.5], published=1e-6) == 1e-8  # 100× below is closer than 100× above
    assert _choose([1e-6, 1e-5], [math.inf, 2.0], published=1e-6) == 1e-5  # a diverged trial loses
    with pytest.raises(ValueError, match="every learning-rate candidate diverged"):
        _choose([1e-6], [math.inf], published=1e-6)


def test_dpo_sweep_result_reaches_the_stage_run(layout, tmp_path):
    # DPO scores against its starting model: at the start the policy is the reference, so the loss is log 2.
    config = TrainingConfig(**{**SMALL, "lr_sweep_steps": 2}, learning_rate=1e-3, lr_sweep=[1.0, 1000.0])
    _, held = split_heldout(GROUPS, 0.25, config.seed)
    assert validation_loss(BASE, held, "dpo", config, reference_model=BASE, home=layout) == \
        pytest.approx(math.log(2), abs=1e-5)
    with pytest.raises(ValueError, match="reference_model"):
        validation_loss(BASE, held, "dpo", config, home=layout)

    swept, params, train_on = maybe_sweep(GROUPS, "dpo", BASE, config, layout)
    assert train_on is GROUPS  # the final stage trains on every prompt
    rates = [5e-7, 5e-4]
    losses = [params[f"lr_sweep/val_loss:{r:g}"] for r in rates]
    assert all(math.isfinite(v) for v in losses)
    assert params["lr_sweep/chosen"] == rates[losses.index(min(losses))]
    # the choice wins over the global `learning_rate` the config set
    assert swept.learning_rate_for("dpo") == params["lr_sweep/chosen"]

    import mlflow

    result = train(TrainRequest(GROUPS, objective="dpo", base_model=BASE, out_dir=tmp_path / "dpo",
                                config=swept.model_copy(update={"max_steps": 1}), home=layout, run_name="swept-dpo",
                                extra_params=params))
    logged = mlflow.MlflowClient().get_run(result.mlflow_run_id).data.params
    assert logged["lr_sweep/chosen"] == str(params["lr_sweep/chosen"])
    assert float(logged["peak_learning_rate"]) == params["lr_sweep/chosen"]
    assert {f"lr_sweep/val_loss:{r:g}" for r in rates} <= set(logged)


# -- the outcome and its limits ------------------------------------------------------------------------------------

def test_chosen_config_wins_over_the_global_rate():
    config = TrainingConfig(learning_rate=1e-3)
    chosen = chosen_config(config, "sppo", 5e-5)
    assert chosen.learning_rate_for("sppo") == 5e-5
    assert config.learning_rate_for("sppo") == 1e-3  # the original is untouched
    assert chosen_config(TrainingConfig(), "rrhf", 4e-4).learning_rate_for("rrhf") == 4e-4
    with pytest.raises(ValueError, match="positive"):
        chosen_config(config, "sft", 0.0)


def test_online_objectives_and_no_sweep(layout):
    config = TrainingConfig(**SMALL, lr_sweep=[1.0, 10.0])
    with pytest.raises(ValueError, match="RLHF samples its own responses"):
        sweep_learning_rate(GROUPS, "rlhf", BASE, config, layout)
    same, params, groups = maybe_sweep(GROUPS, "rlhf", BASE, config, layout)
    assert same is config and groups is GROUPS and "online" in params["lr_sweep/skipped"]
    unswept = TrainingConfig(**SMALL)
    assert maybe_sweep(GROUPS, "sft", BASE, unswept, layout) == (unswept, {}, GROUPS)
    # one prompt cannot be split: the stage trains at its configured rate and says why
    _, params, _ = maybe_sweep(GROUPS[:1], "sft", BASE, config, layout)
    assert "held out" in params["lr_sweep/skipped"]


@pytest.mark.parametrize("bad", [[], [0.0], [1.0, -10.0], [1.0, 1.0], [float("inf")]])
def test_sweep_multipliers_are_validated(bad):
    with pytest.raises(ValueError, match="lr_sweep"):
        TrainingConfig(lr_sweep=bad)
