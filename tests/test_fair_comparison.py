"""The rules that make the methods comparable: one step budget for every checkpoint (the curriculum's stages share
it), the data each one consumed stated per sample type, the SFT baseline's critiques, and the positive control's
HH-RLHF pairs kept apart from every evaluated item."""

from __future__ import annotations

import pytest

from alignment_pipeline.evaluation import hh_data
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.consumption import consumption, reached
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


def test_under_a_budget_the_reference_pass_covers_only_the_groups_it_reaches(tmp_path):
    """DPO's reference log-probs are computed for the pairs the budget's steps train on, and those are exactly the
    pairs the loop consumed; the rest stay NaN (never read)."""
    import json

    import torch

    groups = letter_groups(12, seed=2, responses=2)  # 12 pairs, 2 per batch: 6 steps an epoch
    config = TrainingConfig(budget_steps=2, per_device_batch=2, max_length=64, register_model=False,
                            save_every=1000, warmup_ratio=0.0)
    out = tmp_path / "dpo"
    result = train(TrainRequest(groups, objective="dpo", base_model="tiny:tiny-64", out_dir=out, config=config,
                                home=HomeLayout(tmp_path / "home"), run_name="budget-reference"))
    assert result.steps == 2
    reference = torch.load(out / "reference_logps.pt")["logps"]
    computed = {i for i in range(reference.shape[0]) if not torch.isnan(reference[i]).all()}
    assert len(computed) == 4  # 2 steps × 2 pairs, of 12
    trained = {i for _, _, _, batch in json.loads((out / "batches_consumed.json").read_text()) for i in batch}
    assert trained == computed


def test_budget_groups_walk_the_loop_s_batches():
    from transformers import AutoTokenizer

    from alignment_pipeline.training.data import budget_groups, make_batches, tokenize_groups
    from alignment_pipeline.training.trainer import resolve_base_model

    tok = AutoTokenizer.from_pretrained(resolve_base_model("tiny:tiny-64", HomeLayout()))
    tokenized = tokenize_groups(tok, letter_groups(7, seed=3), max_length=64, min_prompt_tokens=4)
    first = make_batches(tokenized, 2, seed=5, epoch=0)
    assert budget_groups(tokenized, 2, seed=5, batches_per_step=1, steps=2) == set(first[0]) | set(first[1])
    assert budget_groups(tokenized, 2, seed=5, batches_per_step=2, steps=1) == set(first[0]) | set(first[1])
    assert budget_groups(tokenized, 2, seed=5, batches_per_step=1, steps=4) is None  # 4 batches hold all 7


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


def test_trained_figures_count_only_what_the_steps_reached():
    from alignment_pipeline.training.objectives import training_groups

    a = PromptGroup("qa", "", ["x", "y", "z"], [5, 3, 1], key="imitation:a")
    b = PromptGroup("qb", "", ["u", "v"], [6, 2], key="realignment:b")
    c = PromptGroup("qc", "", ["s", "t"], [4, 2], key="imitation:c")
    groups = [a, b, c]
    # the contrastive trainer indexes the groups themselves: a batch log that reached only group 2 (c)
    sa = reached(groups, groups, [[1, 0, 0, [2]]], "stable_alignment")
    assert (sa["trained/imitation/prompts"], sa["trained/imitation/responses"], sa["trained/imitation/pairs"]) == \
        (1, 2, 1)
    assert sa["trained/realignment/prompts"] == 0
    # DPO trains on pairs: best_vs_rest gives a two pairs, b one, c one; one of a's pairs reached
    units = training_groups(groups, "dpo", TrainingConfig())
    first_of_a = next(i for i, u in enumerate(units) if u.key.startswith("imitation:a:"))
    dpo = reached(groups, units, [[1, 0, 0, [first_of_a]]], "dpo")
    assert (dpo["trained/imitation/prompts"], dpo["trained/imitation/responses"], dpo["trained/imitation/pairs"]) \
        == (1, 2, 1)
    assert consumption(groups, "dpo")["data/imitation/pairs"] == 3  # what it drew, beside what it reached


def test_the_positive_control_never_trains_on_an_evaluated_prompt():
    control = control_groups()
    assert len(control) > 500 and all(g.ratings == [2.0, 1.0] and len(g.responses) == 2 for g in control)
    trained = {hh_data.normalise(hh_data.first_question("\n\n" + g.instruction)) for g in control}
    evaluated = {hh_data.normalise(i.question) for i in hh_data.hh_items().items + hh_data.hh_a_items().items}
    evaluated |= {hh_data.normalise(hh_data.first_question("\n\n" + d["context"]))
                  for _, _, d in hh_data.preference_docs("eval")}
    assert trained and evaluated and not trained & evaluated
    assert hh_data.hh_items().control_removed > 0
