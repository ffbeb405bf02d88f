"""Where a stage starts, and a stage with no usable samples passing its starting model on."""

from pathlib import Path

import pytest

from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.curriculum import (
    missing_data,
    pass_through,
    spec_for,
    stage_start,
)
from alignment_pipeline.training.lineage import checkpoint_row, not_trained_note, record_checkpoint
from alignment_pipeline.warehouse import Warehouse


def test_stage_start_follows_the_chain_and_empty_stages_pass_through(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    config = TrainingConfig(base_model="tiny:base")
    stage1, stage2, stage3 = (spec_for(k, config) for k in
                              ("stage1_imitation", "stage2_self_critique", "stage3_realignment"))
    assert stage_start(warehouse, stage1, config) == "tiny:base"
    with pytest.raises(ValueError, match="stage1_imitation, which has not been trained"):
        stage_start(warehouse, stage2, config)

    record_checkpoint(warehouse, name="stage1_imitation", kind="stage1_imitation", objective="stable_alignment",
                      path="/ckpt/stage1", base_model="tiny:base", parent_checkpoint=None,
                      samples_batches=["b"], steps=3)
    assert stage_start(warehouse, stage2, config) == "/ckpt/stage1"

    assert missing_data(warehouse, stage2, config) == "no self_critique samples"  # no alignment_samples at all
    pass_through(warehouse, stage2, "/ckpt/stage1", why="no self_critique samples")
    row = checkpoint_row(warehouse, "stage2_self_critique")
    assert (row["path"], row["steps"], row["parent_checkpoint"]) == ("/ckpt/stage1", 0, "stage1_imitation")
    assert row["note"] == "no self_critique samples; it is its starting model (stage1_imitation), unchanged"
    assert not_trained_note(row) == row["note"] and "has not run" in not_trained_note(None)
    assert stage_start(warehouse, stage3, config) == "/ckpt/stage1"


def test_a_base_model_name_passed_through_is_recorded_as_its_model_directory(tmp_path):
    """A first stage with no samples records the base model's directory, never a name like `tiny:...` that
    from_pretrained cannot load."""
    from alignment_pipeline.paths import HomeLayout

    warehouse = Warehouse(tmp_path / "w.duckdb")
    config = TrainingConfig(base_model="tiny:base")
    stage1 = spec_for("stage1_imitation", config)
    home = HomeLayout(tmp_path / "home")
    pass_through(warehouse, stage1, stage_start(warehouse, stage1, config), why="no imitation samples", home=home)
    row = checkpoint_row(warehouse, "stage1_imitation")
    assert (tmp_path / "home").resolve() in Path(row["path"]).resolve().parents
    assert (Path(row["path"]) / "config.json").is_file() and row["base_model"] == "tiny:base"


def test_group_stats_say_how_contrastive_the_data_is():
    from alignment_pipeline.training.curriculum import group_stats
    from alignment_pipeline.training.data import PromptGroup

    groups = [PromptGroup("q1", "", ["a"], [5.0]), PromptGroup("q2", "", ["a", "b"], [3.0, 3.0]),
              PromptGroup("q3", "", ["a", "b", "c"], [1.0, 5.0, 5.0]), PromptGroup("q4", "", ["a", "b"], [2.0, 6.0])]
    assert group_stats(groups) == {"groups": 4, "groups_multi_response_share": 0.75, "groups_ranked_share": 0.5}
    assert group_stats([])["groups_ranked_share"] == 0.0
