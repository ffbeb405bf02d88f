"""The rules that make the methods comparable: one step budget for every checkpoint (the curriculum's stages share
it), the data each one consumed stated per sample type, the SFT baseline's critiques, and the positive control's
HH-RLHF pairs kept apart from every evaluated item."""

from __future__ import annotations

import pytest

from alignment_pipeline.evaluation import hh_data
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.consumption import consumption
from alignment_pipeline.training.control import control_groups
from alignment_pipeline.training.curriculum import stage_budget
from alignment_pipeline.training.data import PromptGroup
from alignment_pipeline.training.stages import CHECKPOINTS
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_checkpoint_trains_the_same_budget_and_the_stages_share_it():
    config = TrainingConfig(budget_steps=100)
    stages = [c.kind for c in CHECKPOINTS if c.role == "stage"]
    others = [c.kind for c in CHECKPOINTS if c.role != "stage"]
    assert [stage_budget(k, config) for k in stages] == [33, 34, 33]  # cumulative rounding: they add up to 100
    assert {stage_budget(k, config) for k in others} == {100}
    skewed = TrainingConfig(budget_steps=100, curriculum_shares=[2, 1, 1])
    assert [stage_budget(k, skewed) for k in stages] == [50, 25, 25]
    assert stage_budget("sft", TrainingConfig()) is None  # no budget: epochs and max_steps decide
    with pytest.raises(ValueError, match="curriculum_shares"):
        TrainingConfig(curriculum_shares=[1, 0, 1])


def test_a_budget_trains_exactly_its_steps_repeating_the_data(tmp_path):
    groups = letter_groups(3, seed=1)  # 3 groups, 2 per batch: 2 steps an epoch
    config = TrainingConfig(budget_steps=5, epochs=1, max_steps=1, per_device_batch=2, max_length=64,
                            register_model=False, save_every=1000, warmup_ratio=0.0)
    result = train(TrainRequest(groups, objective="sft", base_model="tiny:tiny-64", out_dir=tmp_path / "sft",
                                config=config, home=HomeLayout(tmp_path / "home"), run_name="budget"))
    assert result.steps == 5  # neither epochs=1 (2 steps) nor max_steps=1 stops it


def _group(kind: str, ratings: list[float]) -> PromptGroup:
    return PromptGroup("q", "", [f"r{i}" for i in range(len(ratings))], ratings, key=f"{kind}:k{len(ratings)}")


def test_the_data_table_counts_what_each_objective_draws():
    groups = [_group("imitation", [5, 3, 1]), _group("realignment", [6, 2]), _group("self_critique", [4, 4, 2])]
    sa = consumption(groups, "stable_alignment")
    assert (sa["data/imitation/prompts"], sa["data/imitation/responses"], sa["data/imitation/pairs"]) == (1, 3, 2)
    assert sa["data/self_critique/pairs"] == 1 and sa["data/realignment/pairs"] == 1
    rrhf = consumption(groups, "rrhf")
    assert rrhf["data/imitation/pairs"] == 3 and rrhf["data/self_critique/pairs"] == 2  # every unequal pair
    assert consumption(groups, "dpo", "best_vs_worst")["data/imitation/pairs"] == 1
    assert consumption(groups, "sft")["data/imitation/pairs"] == 0
    assert "data/hh_control/prompts" not in sa  # a type no checkpoint here used is not invented


def test_the_positive_control_never_trains_on_an_evaluated_prompt():
    control = control_groups()
    assert len(control) > 500 and all(g.ratings == [2.0, 1.0] and len(g.responses) == 2 for g in control)
    trained = {hh_data.normalise(hh_data.first_question("\n\n" + g.instruction)) for g in control}
    evaluated = {hh_data.normalise(i.question) for i in hh_data.hh_items().items + hh_data.hh_a_items().items}
    evaluated |= {hh_data.normalise(hh_data.first_question("\n\n" + d["context"]))
                  for _, _, d in hh_data.preference_docs("eval")}
    assert trained and evaluated and not trained & evaluated
    assert hh_data.hh_items().control_removed > 0
