"""The RLHF baseline's reward model: prompt-level hold-out, length balancing and its report, and a tiny model that
learns to rank a distinguishable preferred response above the other on held-out prompts."""

from __future__ import annotations

import json
import random

import pytest

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import RewardModelConfig, TrainingConfig
from alignment_pipeline.training.data import PromptGroup
from alignment_pipeline.training.reward_model import (
    RewardScorer,
    balance,
    length_bias,
    record_reward_model,
    reward_model_row,
    scored_sample,
    split_prompts,
    tokenize_pairs,
    train_reward_model,
)
from alignment_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vowel_pairs(n: int, seed: int) -> list[PromptGroup]:
    """The preferred response is all vowels, the other all consonants, of independent random lengths (so length
    says nothing about the winner)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        good = "".join(rng.choice("aeiou") for _ in range(rng.randint(4, 10)))
        bad = "".join(rng.choice("bcdfg") for _ in range(rng.randint(4, 10)))
        out.append(PromptGroup(f"Question {seed}-{i} {rng.random():.6f}", "", [bad, good], [2.0, 6.0],
                               key=f"q{seed}-{i}", batches=("b1",)))
    return out


def _biased_pairs() -> list[PromptGroup]:
    """10 pairs, every length difference 5 bytes (one bucket): the longer response wins 8 times."""
    groups = []
    for i in range(10):
        long, short = "x" * 15, "y" * 10
        chosen, rejected = (long, short) if i < 8 else (short, long)
        groups.append(PromptGroup(f"p{i}", "", [chosen, rejected], [5.0, 1.0], key=f"p{i}"))
    return groups


def test_hold_out_is_by_prompt_and_deterministic():
    groups = _vowel_pairs(20, seed=3)
    # A second group of the same prompt (another sample type) must follow its prompt to the same side.
    groups.append(PromptGroup(groups[0].instruction, "", ["aaa", "bbb"], [7.0, 1.0], key="other-type"))
    train, held = split_prompts(groups, 0.25, seed=0)
    assert (train, held) == split_prompts(groups, 0.25, seed=0)
    held_prompts = {g.instruction for g in held}
    assert len(held_prompts) == 5 and not held_prompts & {g.instruction for g in train}
    assert len(train) + len(held) == len(groups)
    assert split_prompts(groups, 0.25, seed=1)[1] != held  # the seed decides which prompts
    assert split_prompts(groups[:2], 0.1, seed=0)[1]  # a positive share holds out at least one prompt
    with pytest.raises(ValueError, match="heldout_share"):
        split_prompts(groups, 1.0, seed=0)


def test_train_accuracy_sample_is_seeded_and_capped():
    assert scored_sample(5, None, seed=0) == scored_sample(5, 9, seed=0) == [0, 1, 2, 3, 4]
    picked = scored_sample(100, 10, seed=0)
    assert len(set(picked)) == 10 and picked == sorted(picked) and picked == scored_sample(100, 10, seed=0)
    assert picked != scored_sample(100, 10, seed=1)


def test_length_balancing_report_on_a_biased_set():
    from transformers import ByT5Tokenizer

    pairs = tokenize_pairs(ByT5Tokenizer(), _biased_pairs(), max_length=128)
    assert pairs.chosen_len[0] == 16 and pairs.rejected_len[0] == 11  # bytes + EOS
    before = length_bias(pairs.chosen_len, pairs.rejected_len, pairs.chosen_rating, pairs.rejected_rating)
    assert before["pairs"] == 10 and before["decided_pairs"] == 10
    assert before["longer_wins_share"] == pytest.approx(0.8)
    assert before["score_length_corr"] > 0.5

    kept = balance(pairs, enabled=True, bucket_width=20, seed=0)
    after = length_bias(kept.chosen_len, kept.rejected_len, kept.chosen_rating, kept.rejected_rating)
    assert len(kept) == 4 and after["longer_wins_share"] == pytest.approx(0.5)
    assert after["score_length_corr"] == pytest.approx(0.0, abs=1e-9)
    assert len(balance(pairs, enabled=False, bucket_width=20, seed=0)) == 10

    # The model side: scores that always favour the longer response show the full bias.
    longer = length_bias([3, 9], [7, 2], [0.1, 0.9], [0.5, 0.2])
    assert longer["longer_wins_share"] == 1.0
    with pytest.raises(ValueError, match="rated strictly higher"):
        tokenize_pairs(ByT5Tokenizer(), [PromptGroup("p", "", ["a", "b"], [1.0, 5.0])], max_length=64)


def test_reward_model_learns_the_preferred_response_on_held_out_prompts(tmp_path):
    home = HomeLayout(tmp_path / "home")
    groups = _vowel_pairs(96, seed=1)
    config = TrainingConfig(base_model="tiny:tiny-64", max_length=96, seed=0, warmup_ratio=0.0,
                            reward_model=RewardModelConfig(heldout_share=0.25, learning_rate=3e-3, epochs=3,
                                                           per_device_batch=8, train_accuracy_pairs=20))
    result = train_reward_model(groups, config=config, home=home)
    m = result.metrics
    print(f"\nreward model: {result.steps} steps, held-out accuracy {m['heldout_accuracy']:.3f} "
          f"over {m['model_heldout_pairs']} pairs, train accuracy {m['train_accuracy']:.3f}")
    assert m["heldout_prompts"] == 24 and m["train_prompts"] == 72
    assert m["model_heldout_pairs"] == 24 and m["data_pairs"] == 72
    assert result.steps == 3 * -(-m["balanced_pairs"] // 8)
    assert m["heldout_accuracy"] >= 0.8  # chance is 0.5
    assert m["train_accuracy_pairs"] == m["model_train_pairs"] == 20  # the capped sample, held-out left whole
    assert (result.path / "config.json").is_file()

    scorer = RewardScorer(result.path, device="cpu")
    from alignment_pipeline.llm.prompt_format import Prompt

    good, bad = scorer.score([Prompt("A new question"), Prompt("A new question")], ["aeiouae", "bcdfgbc"])
    assert good > bad

    wh = Warehouse(tmp_path / "w.duckdb")
    record_reward_model(wh, result, base_model="tiny:tiny-64")
    record_reward_model(wh, result, base_model="tiny:tiny-64")  # retraining replaces the row
    row = reward_model_row(wh)
    assert wh.count("reward_models") == 1 and row["path"] == str(result.path) and row["steps"] == result.steps
    assert json.loads(row["metrics"])["heldout_accuracy"] == m["heldout_accuracy"]
    assert row["mlflow_run_id"] == result.mlflow_run_id


def test_no_pairs_is_a_clear_error(tmp_path):
    ties = [PromptGroup("p", "", ["a", "b"], [3.0, 3.0])]
    with pytest.raises(ValueError, match="no preference pairs"):
        train_reward_model(ties, config=TrainingConfig(), home=HomeLayout(tmp_path / "home"))


def test_reward_model_scores_hh_answers_as_an_extra_judge(tmp_path):
    """Its scores land in benchmark_results as their own rows (`reward_model_score`), beside the judge's."""
    from transformers import set_seed

    from alignment_pipeline.evaluation.config import EvaluationConfig
    from alignment_pipeline.evaluation.judge import SCORE_CANDIDATES
    from alignment_pipeline.evaluation.results import evaluate_checkpoint
    from alignment_pipeline.llm.models import resolve_model_path
    from alignment_pipeline.llm.prompt_format import Prompt
    from alignment_pipeline.llm.scripted import ScriptedLLM
    from alignment_pipeline.training.reward_model import load_reward_model

    tiny = resolve_model_path("tiny:tiny-64", tmp_path / "models")
    set_seed(0)
    model, tok = load_reward_model(tiny)  # an untrained head is enough to show the plumbing
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    want = SCORE_CANDIDATES[6]
    # The judge writes its score (the parsed integer is the score) and puts its log-prob mass on the same one.
    judge = ScriptedLLM(responder=lambda p: " 7\nReason: ok",
                        scorer=lambda p, cands: [0.0 if c == want else -60.0 for c in cands], model_name="j")
    wh = Warehouse(tmp_path / "w.duckdb")
    config = EvaluationConfig(tasks=["hh", "hh_a"], hh_limit=3, max_new_tokens=6, device="cpu")
    report = evaluate_checkpoint(wh, checkpoint="rlhf", kind="baseline", model_path=tiny, config=config,
                                 judge=judge, reward_model_path=str(tmp_path / "rm"))
    stored = {(r["task"], r["metric"]): r for r in wh.query("SELECT * FROM benchmark_results").iter_rows(named=True)}
    scorer = RewardScorer(tmp_path / "rm", device="cpu")
    for task in ("hh", "hh_a"):
        judged = report.judgements[task]
        expected = scorer.score([Prompt(j.request) for j in judged], [j.answer for j in judged])
        row = stored[(task, "reward_model_score")]
        assert row["n"] == 3 and row["value"] == pytest.approx(sum(expected) / 3, abs=1e-5)
        assert stored[(task, "score")]["value"] == pytest.approx(7.0, abs=1e-6)  # the judge's rows stay
    assert report.value("hh", "reward_model_score") == stored[("hh", "reward_model_score")]["value"]
    without = evaluate_checkpoint(wh, checkpoint="rlhf", kind="baseline", model_path=tiny, config=config, judge=judge)
    assert not [r for r in without.rows if r.metric == "reward_model_score"]
    assert wh.count("benchmark_results", "metric = 'reward_model_score'") == 0  # re-evaluation replaced them
