"""Degenerate training steps look degenerate: a checkpoint recorded as not trained, a Stable Alignment stage that
fell back to SFT, a reward model judged on too few held-out pairs (or none trained) each carry a warning, and
the checkpoint's metadata says what ran. Rows are written directly; the Dagster test trains nothing."""

from __future__ import annotations

import dagster as dg
import pytest

from alignment_pipeline.training.checks import (
    CHECKPOINT_CHECKS,
    REWARD_MODEL_CHECKS,
    check_checkpoint_trained,
    check_contrastive,
    check_heldout_pairs,
    check_reward_model_trained,
    what_ran,
)
from alignment_pipeline.training.config import RewardModelConfig, TrainingConfig
from alignment_pipeline.training.lineage import checkpoint_row, record_checkpoint
from alignment_pipeline.training.reward_model import RewardModelResult, record_reward_model
from alignment_pipeline.warehouse.db import Warehouse

CONTRASTIVE = {"steps": 4, "hinge": 0.3, "active_margin_share": 0.5, "hinge_fired_steps": 3, "groups": 8,
               "groups_multi_response_share": 1.0, "groups_ranked_share": 0.75}


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(tmp_path / "w.duckdb")


def _record(warehouse, kind, objective="stable_alignment", steps=4, metrics=None, note=None):
    record_checkpoint(warehouse, name=kind, kind=kind, objective=objective, path=f"/m/{kind}", base_model="tiny:x",
                      parent_checkpoint=None, samples_batches=["b"], steps=steps, metrics=metrics, note=note)


def test_a_contrastive_stage_that_compared_passes(warehouse):
    _record(warehouse, "stage1_imitation", metrics=CONTRASTIVE)
    trained, contrastive = (c.run(warehouse=warehouse, checkpoint="stage1_imitation") for c in CHECKPOINT_CHECKS)
    assert trained.passed and contrastive.passed
    assert contrastive.description == "the hinge fired on 3 of 4 steps"
    assert what_ran(checkpoint_row(warehouse, "stage1_imitation")) == "Stable Alignment loss, hinge active (4 optimizer steps)"


@pytest.mark.parametrize(("changed", "said"), [
    ({"groups": 1, "groups_multi_response_share": 0.0, "groups_ranked_share": 0.0},
     "fell back to SFT: 1 single-response group"),
    ({"groups_ranked_share": 0.0}, "fell back to SFT: 8 equally rated groups"),
    ({"hinge_fired_steps": 0, "hinge": 0.0}, "fell back to SFT: the hinge never fired in 4 steps"),
    # a row recorded before the count existed: its last step's terms decide
    ({"hinge_fired_steps": None, "hinge": 0.0, "active_margin_share": 0.0},
     "fell back to SFT: the hinge never fired in 4 steps"),
])
def test_a_contrastive_stage_that_fell_back_to_sft_warns(warehouse, changed, said):
    metrics = {k: v for k, v in (CONTRASTIVE | changed).items() if v is not None}
    _record(warehouse, "stage3_realignment", metrics=metrics)
    outcome = check_contrastive(warehouse, "stage3_realignment")
    assert (outcome.passed, outcome.severity, outcome.description) == (False, "WARN", said)
    assert what_ran(checkpoint_row(warehouse, "stage3_realignment")) == f"{said} (4 optimizer steps)"
    assert check_checkpoint_trained(warehouse, "stage3_realignment").passed  # it did train, as SFT


def test_other_objectives_have_no_hinge_to_check(warehouse):
    _record(warehouse, "sft", objective="sft", metrics={"groups_multi_response_share": 0.0})
    outcome = check_contrastive(warehouse, "sft")
    assert outcome.passed and outcome.description == "not applicable: objective sft has no hinge"


def test_a_checkpoint_recorded_as_not_trained_warns(warehouse):
    _record(warehouse, "rlhf", objective="rlhf", steps=0, note="no reward model; it is its starting model")
    trained = check_checkpoint_trained(warehouse, "rlhf")
    assert (trained.passed, trained.severity) == (False, "WARN")
    assert trained.description == "not trained: no reward model; it is its starting model"
    assert trained.metadata["steps"] == 0
    assert check_contrastive(warehouse, "rlhf").passed  # nothing ran to compare
    missing = check_checkpoint_trained(warehouse, "dpo")
    assert not missing.passed and missing.description == "not trained: no checkpoints row"


def _reward_model(warehouse, tmp_path, **metrics):
    record_reward_model(warehouse, RewardModelResult(tmp_path / "rm", 3, metrics, None, ["b"]), base_model="tiny:x")


def test_reward_model_on_few_heldout_pairs_warns_at_the_configured_bar(warehouse, tmp_path):
    _reward_model(warehouse, tmp_path, heldout_accuracy=0.0, heldout_pairs=1)
    config = TrainingConfig(reward_model=RewardModelConfig(min_heldout_pairs=5))
    few = check_heldout_pairs(warehouse, config)
    assert (few.passed, few.severity) == (False, "WARN")
    assert few.description == "held-out accuracy 0.00 on 1 pair (bar 5)"
    _reward_model(warehouse, tmp_path, heldout_accuracy=0.625, heldout_pairs=8)
    assert check_heldout_pairs(warehouse, config).passed
    strict = TrainingConfig(reward_model=RewardModelConfig(min_heldout_pairs=9))
    assert not check_heldout_pairs(warehouse, strict).passed
    # older rows carry the count under the length-bias prefix only
    _reward_model(warehouse, tmp_path, heldout_accuracy=None, model_heldout_pairs=0)
    none = check_heldout_pairs(warehouse, config)
    assert not none.passed and none.description == "held-out accuracy none on 0 pairs (bar 5)"


def test_reward_model_not_trained_warns_with_why(warehouse, tmp_path):
    outcome = check_reward_model_trained(warehouse, not_trained="no preference pairs")
    assert (outcome.passed, outcome.severity, outcome.description) == (False, "WARN",
                                                                      "not trained: no preference pairs")
    assert check_heldout_pairs(warehouse, TrainingConfig()).passed  # nothing to judge
    _reward_model(warehouse, tmp_path, heldout_accuracy=0.5, heldout_pairs=40)
    assert all(c.run(warehouse=warehouse, config=TrainingConfig()).passed for c in REWARD_MODEL_CHECKS)


# -- in Dagster: the asset carries the warnings --------------------------------------------------------------------

def _checks(evaluations, asset: str):
    return {e.check_name: (e.passed, e.severity.value, e.description) for e in evaluations
            if e.asset_key.to_user_string() == asset}


def test_untrained_checkpoint_and_reward_model_warn_in_dagster(tmp_path, monkeypatch):
    from alignment_pipeline.defs.resources import PipelineResource
    from alignment_pipeline.defs.reward import reward_model
    from alignment_pipeline.defs.training import checkpoint_assets

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ALIGNMENT_MLFLOW_URI", raising=False)
    # A hub id that is never loaded: nothing trains, and no tiny model is built for the pass-through.
    settings = tmp_path / "settings.yaml"
    settings.write_text("training:\n  base_model: example/never-loaded\n")
    resource = PipelineResource(home=str(tmp_path / "home"), profile="smoke", settings_file=str(settings))
    stage1 = next(a for a in checkpoint_assets if a.key == dg.AssetKey(["checkpoints", "stage1_imitation"]))
    with dg.instance_for_test() as instance:  # no samples at all: both recorded as not trained
        result = dg.materialize([stage1, reward_model], instance=instance, resources={"pipeline": resource})
    assert result.success
    metadata = {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
                for m in (e.materialization for e in result.get_asset_materialization_events())}
    evaluations = result.get_asset_check_evaluations()

    stage = metadata["checkpoints/stage1_imitation"]
    assert list(stage)[0] == "ran" and stage["ran"].startswith("not trained: no imitation samples")
    assert _checks(evaluations, "checkpoints/stage1_imitation") == {
        "trained": (False, "WARN", stage["ran"]),
        "contrastive": (True, "ERROR", "not applicable: not trained")}

    reward = metadata["reward_model"]
    assert reward["not_trained"].startswith("no preference pairs")
    assert _checks(evaluations, "reward_model") == {
        "trained": (False, "WARN", f"not trained: {reward['not_trained']}"),
        "heldout_pairs": (True, "ERROR", "not applicable: no reward model")}
