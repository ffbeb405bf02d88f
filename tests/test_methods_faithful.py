"""The baselines as their papers define them: Chain-of-Hindsight's sampled feedback templates, past-token masking and
pretraining term; RLOO's several passes per batch of completions (so PPO's clip acts); the reward model's zero-mean
score penalty in its training loss; SPPO online, sampling from the current policy every iteration."""

from __future__ import annotations

import random

import pytest
import torch

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import RewardModelConfig, RLHFConfig, TrainingConfig
from alignment_pipeline.training.data import PromptGroup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = "tiny:tiny-llama"


def _groups(n: int) -> list[PromptGroup]:
    """Rated groups of three responses, long enough for a few percent of a response to be whole tokens."""
    rng = random.Random(0)

    def words(letters: str) -> str:
        return " ".join("".join(rng.choice(letters) for _ in range(5)) for _ in range(12))

    return [PromptGroup(f"Say something {i}", "", [words("aeiou"), words("bcdfg"), words("lmnpr")], [7.0, 1.0, 4.0],
                        key=f"imitation:p{i}", batches=("b1",)) for i in range(n)]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> HomeLayout:
    return HomeLayout(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def reward_model(home):
    """A reward model trained for two steps: what the online baselines optimise against."""
    from alignment_pipeline.training.reward_model import train_reward_model

    config = TrainingConfig(base_model=BASE, max_length=128, seed=0, register_model=False,
                            reward_model=RewardModelConfig(max_steps=2, per_device_batch=4))
    return train_reward_model(_groups(8), config=config, home=home)


# -- Chain-of-Hindsight --------------------------------------------------------------------------------------------

def _coh_config(**overrides) -> TrainingConfig:
    return TrainingConfig(**{"max_length": 256, "seed": 0, **overrides})


def test_coh_draws_a_feedback_pair_per_chain_from_several_templates():
    from alignment_pipeline.training.hindsight import HINDSIGHT_ROLE, HindsightSegment, feedback_pairs
    from alignment_pipeline.training.objectives import training_groups

    config = _coh_config()
    segments = [s for s in training_groups(_groups(6), "coh", config) if isinstance(s, HindsightSegment)]
    pairs = feedback_pairs(config)
    assert pairs[0] == ("A helpful answer:", "An unhelpful answer:") and len(pairs) == 4
    used = set()
    for first, second in zip(segments[::2], segments[1::2], strict=True):
        # a chain's two segments share one (positive, negative) pair: the first feedback opens both
        opening = first.prefix.strip()
        closing = second.prefix.rsplit("\n\n", 1)[1].strip()
        pair = next(p for p in pairs if {opening, closing} == set(p))
        assert second.prefix.startswith(first.prefix)
        used.add(pair)
    assert len(used) >= 3  # 24 chains draw from 4 pairs
    assert all(s.ratings == [HINDSIGHT_ROLE] for s in segments)
    again = [s for s in training_groups(_groups(6), "coh", config) if isinstance(s, HindsightSegment)]
    assert [s.prefix for s in again] == [s.prefix for s in segments]  # seeded
    only = training_groups(_groups(6), "coh", _coh_config(coh_feedback_templates=[]))
    assert {s.prefix.split("\n")[0] for s in only if isinstance(s, HindsightSegment)} == \
        {"A helpful answer:", "An unhelpful answer:"}


def test_coh_masks_a_few_past_tokens_of_the_earlier_response_only():
    from transformers import ByT5Tokenizer

    from alignment_pipeline.training.data import tokenize_groups
    from alignment_pipeline.training.hindsight import HindsightSegment
    from alignment_pipeline.training.objectives import training_groups

    tok = ByT5Tokenizer()
    groups = _groups(6)
    masked_groups = training_groups(groups, "coh", _coh_config(coh_past_mask_max=0.05))
    plain_groups = training_groups(groups, "coh", _coh_config(coh_past_mask_max=0.0))
    masked = tokenize_groups(tok, masked_groups, max_length=512)
    plain = tokenize_groups(tok, plain_groups, max_length=512)
    dropped_any = 0
    for seg, m, p in zip(masked_groups, masked, plain, strict=True):
        assert m.response_ids == p.response_ids  # the targets are untouched
        if not isinstance(seg, HindsightSegment) or seg.past == (0, 0):
            assert m.prompt_ids == p.prompt_ids  # a chain's first segment and the pretraining groups have no past
            continue
        # byte-level: the earlier response's tokens are its bytes, at a known place in the prompt
        start = len(p.prompt_ids) - len(seg.prefix.encode()) + seg.past[0]
        past = range(start, start + seg.past[1] - seg.past[0])
        removed = _left_out(p.prompt_ids, m.prompt_ids)
        assert all(i in past for i in removed), (removed, past)
        assert len(removed) <= round(0.05 * len(past))
        dropped_any += bool(removed)
    assert dropped_any >= 3


def _left_out(full: list[int], kept: list[int]) -> list[int]:
    """The positions of `full` missing from `kept`, a subsequence of it."""
    out, j = [], 0
    for i, t in enumerate(full):
        if j < len(kept) and kept[j] == t:
            j += 1
        else:
            out.append(i)
    assert j == len(kept), "the masked prompt is not the full one with tokens left out"
    return out


def test_coh_pretraining_term_is_plain_sft_weighted_by_lambda(home):
    from alignment_pipeline.llm.prompt_format import ALPACA
    from alignment_pipeline.training.data import tokenize_groups
    from alignment_pipeline.training.forward import pack_groups
    from alignment_pipeline.training.hindsight import PRETRAIN_ROLE
    from alignment_pipeline.training.objectives import batch_ratings, objective_loss, training_groups
    from alignment_pipeline.training.runtime import resolve_runtime
    from alignment_pipeline.training.trainer import load_model, resolve_base_model

    groups = _groups(2)
    with_term = training_groups(groups, "coh", _coh_config(coh_pretrain_weight=0.5))
    pretrain = [g for g in with_term if g.ratings == [PRETRAIN_ROLE]]
    assert [(g.responses, ALPACA.render(g.prompt)) for g in pretrain] == \
        [([g.responses[0]], ALPACA.render(g.prompt)) for g in groups]  # best response, plain prompt
    assert not any(g.ratings == [PRETRAIN_ROLE] for g in training_groups(groups, "coh",
                                                                         _coh_config(coh_pretrain_weight=0.0)))

    from transformers import AutoTokenizer

    path = resolve_base_model(BASE, home)
    tok = AutoTokenizer.from_pretrained(path)
    model = load_model(path, _coh_config(), resolve_runtime("cpu", "fp32"))
    mixed = tokenize_groups(tok, [with_term[0], with_term[1], pretrain[0]], max_length=256)
    batch = pack_groups(mixed, tok.pad_token_id)
    ratings = batch_ratings(mixed, batch.max_responses)
    losses = {}
    for weight in (0.0, 0.5):
        model.zero_grad()
        out, _ = objective_loss("coh", model, batch, ratings, None, _coh_config(coh_pretrain_weight=weight))
        out.loss.backward()
        losses[weight] = (out.loss.item(), out.sft, out.extra["pretrain"],
                          model.get_output_embeddings().weight.grad.clone())
    (l0, sft0, pre0, g0), (l5, sft5, pre5, g5) = losses[0.0], losses[0.5]
    assert sft0 == pytest.approx(sft5) and pre0 == pytest.approx(pre5) and pre0 > 0
    assert l0 == pytest.approx(sft0) and l5 == pytest.approx(sft0 + 0.5 * pre0, rel=1e-5)
    assert not torch.allclose(g0, g5)  # the term moves the weights


def test_coh_loss_reads_roles_and_refuses_others():
    from alignment_pipeline.training.losses import coh_loss

    nll = torch.tensor([[1.0], [3.0], [5.0]], requires_grad=True)
    roles, mask = torch.tensor([[1.0], [1.0], [0.0]]), torch.ones(3, 1, dtype=torch.bool)
    out = coh_loss(nll, roles, mask, pretrain_weight=0.1)
    assert out.loss.item() == pytest.approx(2.0 + 0.1 * 5.0)
    out.loss.backward()
    assert nll.grad.flatten().tolist() == pytest.approx([0.5, 0.5, 0.1])
    with pytest.raises(ValueError, match="roles must be 1"):
        coh_loss(nll, torch.tensor([[1.0], [7.0], [0.0]]), mask, pretrain_weight=0.1)


# -- RLOO ----------------------------------------------------------------------------------------------------------

def test_rloo_makes_several_passes_over_each_batch_of_completions(home, reward_model, tmp_path, monkeypatch):
    import trl

    from alignment_pipeline.training.rlhf import train_rlhf

    generations = []
    original = trl.RLOOTrainer._generate_and_score_completions

    def counted(self, inputs):
        generations.append(self.args.num_iterations)
        return original(self, inputs)

    monkeypatch.setattr(trl.RLOOTrainer, "_generate_and_score_completions", counted)
    config = TrainingConfig(base_model=BASE, max_length=64, seed=0, max_steps=4, register_model=False,
                            rlhf=RLHFConfig(num_generations=2, prompts_per_step=2, max_completion_length=8,
                                            learning_rate=1e-2, num_iterations=2))
    assert RLHFConfig().num_iterations == 2  # the default lets the clip act
    result = train_rlhf(_groups(4), reward_model_path=reward_model.path, base_model=BASE, config=config, home=home,
                        out_dir=tmp_path / "rlhf", run_name="rloo-iterations")
    assert result.steps == 4 and result.metrics["num_iterations"] == 2
    assert generations == [2, 2]  # 4 optimizer steps on 2 batches of completions
    assert result.metrics["clip_fraction_mean"] is not None
    assert 0.0 <= result.metrics["clip_fraction_mean"] <= result.metrics["clip_fraction_max"] <= 1.0


# -- reward model --------------------------------------------------------------------------------------------------

def test_reward_model_loss_carries_the_zero_mean_penalty(home, tmp_path):
    from datasets import Dataset
    from trl import RewardTrainer

    from alignment_pipeline.training.reward_model import load_reward_model, reward_args
    from alignment_pipeline.training.runtime import resolve_runtime
    from alignment_pipeline.training.trainer import resolve_base_model

    runtime = resolve_runtime("cpu", "fp32")
    torch.manual_seed(0)
    model, tok = load_reward_model(resolve_base_model(BASE, home))
    with torch.no_grad():  # a score head far from zero, so the penalty is large
        model.score.weight.add_(0.5)
    chosen, rejected = [[5, 6, 7, 8], [9, 10, 11, 12]], [[5, 6, 13], [9, 14, 15]]
    data = Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
    ids = torch.tensor([*chosen, [5, 6, 13, 0], [9, 14, 15, 0]])
    inputs = {"input_ids": ids, "attention_mask": (torch.arange(4) < torch.tensor([4, 4, 3, 3])[:, None]).long()}
    results = {}
    for coef in (0.0, 0.5):
        config = TrainingConfig(base_model=BASE, max_length=32, register_model=False,
                                reward_model=RewardModelConfig(center_coef=coef, per_device_batch=2))
        args = reward_args(config, runtime, tmp_path / f"rm-{coef}")
        assert args.center_rewards_coefficient == (coef or None)
        trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
        results[coef] = (loss.item(), model.score.weight.grad.clone())
    with torch.no_grad():
        scores = model(**inputs).logits.squeeze(-1)
    center = ((scores[:2] + scores[2:]) ** 2).mean().item()
    assert center > 0.01
    assert results[0.5][0] == pytest.approx(results[0.0][0] + 0.5 * center, rel=1e-4)
    assert not torch.allclose(results[0.0][1], results[0.5][1])  # and the gradient pulls the scores to zero
    assert RewardModelConfig().center_coef == 0.01


# -- SPPO online ---------------------------------------------------------------------------------------------------

def test_sppo_win_rates_of_samples_leave_the_sample_out():
    from alignment_pipeline.training.losses import sppo_sample_win_rates

    scores = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rates = sppo_sample_win_rates(scores, mask)
    sig = torch.sigmoid
    assert rates[0, 0].item() == pytest.approx(((sig(torch.tensor(-1.0)) + sig(torch.tensor(-3.0))) / 2).item())
    assert rates[1, :2].tolist() == pytest.approx([0.5, 0.5]) and torch.isnan(rates[1, 2])
    assert rates[0].mean().item() == pytest.approx(0.5)


def test_sppo_online_samples_the_current_policy_each_iteration(home, reward_model, tmp_path, monkeypatch):
    import json

    from alignment_pipeline.training import sppo_online
    from alignment_pipeline.training.curriculum import missing_data, spec_for, train_stage
    from alignment_pipeline.training.lineage import checkpoint_row
    from alignment_pipeline.training.reward_model import record_reward_model
    from alignment_pipeline.warehouse import Warehouse

    calls, win_rates = [], []
    sample, collect = sppo_online.sample_completions, sppo_online.collect

    def sampled(model, prompt_ids, **kw):
        # the policy as it is at this call: a fingerprint of its weights
        calls.append((len(prompt_ids), kw["k"], model.get_output_embeddings().weight.detach().sum().item()))
        return sample(model, prompt_ids, **kw)

    def collected(*args, **kw):
        data = collect(*args, **kw)
        win_rates.append(data.win_rates)
        return data

    monkeypatch.setattr(sppo_online, "sample_completions", sampled)
    monkeypatch.setattr(sppo_online, "collect", collected)
    wh = Warehouse(tmp_path / "w.duckdb")
    config = TrainingConfig(base_model=BASE, max_length=64, seed=0, max_steps=5, register_model=False,
                            learning_rate=1e-2, sppo_eta=10.0, warmup_ratio=0.0,
                            rlhf=RLHFConfig(num_generations=3, prompts_per_step=2, max_completion_length=8,
                                            sppo_iterations=3))
    spec = spec_for("sppo_online", config)
    assert spec.online and spec.objective == "sppo_online"
    assert missing_data(wh, spec, config) is not None  # no samples, no reward model yet
    record_reward_model(wh, reward_model, base_model=BASE)
    result = train_stage(wh, spec, base_model=BASE, parent_checkpoint=None, config=config, home=home,
                         out_dir=tmp_path / "sppo_online", groups=_groups(6))

    # 6 prompts, 3 iterations with fresh prompts: 2 per iteration, one generate call each, 3 samples per prompt
    assert [c[:2] for c in calls] == [(2, 3)] * 3
    fingerprints = [c[2] for c in calls]
    assert len(set(fingerprints)) == 3  # each iteration samples the policy the previous one left
    assert len(win_rates) == 3 and all(w.shape == (2, 3) for w in win_rates)
    assert all(((w >= 0) & (w <= 1)).all() for w in win_rates)
    assert result.steps == 5 and result.metrics["iterations"] == 3  # the 5-step budget split 2, 2, 1
    assert 0 <= result.metrics["win_rate_min"] <= result.metrics["win_rate_max"] <= 1
    row = checkpoint_row(wh, "sppo_online")
    assert row["kind"] == "sppo_online" and row["objective"] == "sppo_online" and row["steps"] == 5
    assert row["path"] == str(result.checkpoint_path) and (result.checkpoint_path / "config.json").is_file()
    assert json.loads(row["metrics"])["samples_per_prompt"] == 3

    import mlflow

    run = mlflow.MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.params["reward_model_path"] == str(reward_model.path)
    assert "train/loss" in run.data.metrics and "sppo/reward_mean" in run.data.metrics


def test_sppo_online_step_plan_follows_the_budget():
    from alignment_pipeline.training.sppo_online import iteration_prompts, steps_per_iteration, trained_shares

    assert steps_per_iteration(5, 1, 3, [2, 2, 2], 2) == [2, 2, 1]
    assert steps_per_iteration(2, 1, 3, [2, 2, 2], 2) == [1, 1]  # no iteration without a step
    assert steps_per_iteration(None, 2, 3, [3, 3, 2], 2) == [4, 4, 2]  # epochs over each iteration's prompts
    assert iteration_prompts(list("abcdefg"), 1, 3, fresh=True) == ["b", "e"]
    assert iteration_prompts(list("ab"), 1, 3, fresh=True) == ["a", "b"]  # too few to split
    assert iteration_prompts(list("abc"), 2, 3, fresh=False) == ["a", "b", "c"]
    # under a step budget an iteration samples only the prompts its steps train on
    assert trained_shares([list("abcd"), list("efgh"), list("ijkl")], [2, 1], 2) == [list("abcd"), list("ef")]
