"""The offline baselines of the paper's table beyond SFT/DPO/SPPO (RRHF, Chain-of-Hindsight), each objective's own
published hyperparameters, and SPPO's explicit rating-to-preference scale."""

from __future__ import annotations

import math

import pytest
import torch

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.losses import sppo_win_rates
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, train

BASE = "tiny:tiny-64"
GROUPS = letter_groups(8, seed=3)  # ratings (7, 1, 4) in every group
# One step at the peak rate: constant schedule, no warmup.
ONE_STEP = dict(max_steps=1, warmup_ratio=0.0, lr_scheduler="constant_with_warmup", per_device_batch=4,
                max_length=64, register_model=False, save_every=1000, seed=0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> HomeLayout:
    return HomeLayout(tmp_path_factory.mktemp("home"))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -- learning rates ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("objective", "rate"), [("sft", 2e-5), ("dpo", 5e-7)])
def test_each_objective_trains_at_its_own_published_rate(objective, rate, home, tmp_path):
    result = train(TrainRequest(GROUPS, objective=objective, base_model=BASE, out_dir=tmp_path / objective,
                                config=TrainingConfig(**ONE_STEP), home=home, run_name=f"lr-{objective}"))
    assert result.metrics["lr"] == pytest.approx(rate)


def test_learning_rates_are_settings_and_one_rate_overrides_them_all():
    config = TrainingConfig.model_validate({"dpo_learning_rate": 1e-6})
    assert config.learning_rate_for("dpo") == 1e-6 and config.learning_rate_for("sppo") == 5e-7
    everyone = TrainingConfig(learning_rate=3e-3)
    assert {everyone.learning_rate_for(o) for o in ("stable_alignment", "sft", "dpo", "sppo", "rrhf", "coh",
                                                     "rlhf")} == {3e-3}
    assert config.learning_rate_for("rlhf") == 1e-6  # TRL RLOO's default, in the rlhf section
    with pytest.raises(ValueError, match="unknown objective 'ppo'"):
        config.learning_rate_for("ppo")


# -- SPPO preference scale -----------------------------------------------------------------------------------------

def test_sppo_win_rates_follow_the_rating_temperature():
    # ratings [3, 1] at temperature 2: P(0 ≻ 1) = σ((3 − 1)/2) = σ(1) = 0.7310586
    #   P̂_0 = (½ + 0.7310586)/2 = 0.6155293; P̂_1 = (½ + σ(−1))/2 = 0.3844707
    mask = torch.tensor([[True, True]])
    rates = sppo_win_rates(torch.tensor([[3.0, 1.0]]), mask, temperature=2.0)
    assert rates[0, 0].item() == pytest.approx((0.5 + _sig(1)) / 2, abs=1e-6)
    assert rates[0, 1].item() == pytest.approx((0.5 + _sig(-1)) / 2, abs=1e-6)
    # temperature 1 is σ(r_i − r_j), the samples_sppo view's scale
    assert sppo_win_rates(torch.tensor([[3.0, 1.0]]), mask, temperature=1.0)[0, 0].item() == \
        pytest.approx((0.5 + _sig(2)) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        sppo_win_rates(torch.tensor([[3.0, 1.0]]), mask, temperature=0.0)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_sppo_training_targets_use_the_configured_temperature(temperature, home, tmp_path):
    # At step 1 the policy is the reference (log-ratio 0), so the loss is the mean squared target η(P̂ − ½) over
    # the responses rated (7, 1, 4).
    config = TrainingConfig(**ONE_STEP, sppo_eta=10.0, sppo_rating_temperature=temperature)
    result = train(TrainRequest(GROUPS, objective="sppo", base_model=BASE, out_dir=tmp_path / "sppo",
                                config=config, home=home, run_name=f"sppo-t{temperature}"))
    ratings = (7.0, 1.0, 4.0)
    rates = [sum(_sig((ri - rj) / temperature) for rj in ratings) / 3 for ri in ratings]
    expected = sum((10.0 * (p - 0.5)) ** 2 for p in rates) / 3
    assert result.metrics["loss"] == pytest.approx(expected, rel=1e-3)


# -- RRHF ----------------------------------------------------------------------------------------------------------

def test_rrhf_objective_is_the_rrhf_loss_of_the_models_log_probs(home):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment_pipeline.training.data import tokenize_groups
    from alignment_pipeline.training.forward import pack_groups, response_logps
    from alignment_pipeline.training.losses import rrhf_loss, sequence_nll
    from alignment_pipeline.training.objectives import batch_ratings, max_responses, objective_loss
    from alignment_pipeline.training.trainer import resolve_base_model

    config = TrainingConfig(rrhf_rank_weight=2.0)
    assert max_responses("rrhf", config) is None  # every candidate of a query is ranked
    path = resolve_base_model(BASE, home)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    groups = tokenize_groups(tokenizer, GROUPS[:3], max_length=64)
    batch = pack_groups(groups, tokenizer.pad_token_id)
    ratings = batch_ratings(groups, batch.max_responses)
    out, _ = objective_loss("rrhf", model, batch, ratings, None, config)
    lp = response_logps(model, batch)
    nll, _, mean_logp = sequence_nll(lp.token_logps, lp.token_mask)
    plain = rrhf_loss(mean_logp, nll, ratings, lp.response_mask)
    assert out.loss.item() == pytest.approx(plain.sft + 2.0 * plain.extra["rank"], rel=1e-5)
    assert out.extra["rank"] > 0  # a random model ranks some lower-rated response above a higher-rated one


def test_rrhf_and_coh_train_end_to_end(home, tmp_path):
    config = TrainingConfig(**{**ONE_STEP, "max_steps": 2}, learning_rate=3e-3)
    for objective in ("rrhf", "coh"):
        result = train(TrainRequest(GROUPS, objective=objective, base_model=BASE, out_dir=tmp_path / objective,
                                    config=config, home=home, run_name=f"e2e-{objective}"))
        assert result.steps == 2 and math.isfinite(result.metrics["loss"])
    assert result.metrics["sft"] > 0


# -- Chain-of-Hindsight --------------------------------------------------------------------------------------------

def test_hindsight_chains_put_feedback_in_the_prompt_and_responses_in_the_targets():
    from alignment_pipeline.llm.prompt_format import ALPACA
    from alignment_pipeline.training.data import PromptGroup
    from alignment_pipeline.training.objectives import training_groups

    group = PromptGroup("How do I greet a neighbour?", "", ["Say hello.", "Ignore them.", "Wave."], [7.0, 1.0, 4.0],
                        key="k", batches=("b",))
    tie = PromptGroup("Tied?", "", ["a", "b"], [3.0, 3.0], key="t")
    # One feedback pair and no pretraining term: the chains alone (tests/test_methods_faithful.py has the rest).
    segments = training_groups([group, tie], "coh", TrainingConfig(coh_feedback_templates=[], coh_pretrain_weight=0))
    assert len(segments) == 8  # 2 pairs (best vs each lower) × 2 orders × 2 segments; the tie gives none
    texts = [ALPACA.render(s.prompt) + s.responses[0] for s in segments[:4]]
    head = ALPACA.render(group.prompt)
    assert texts == [
        head + "A helpful answer:\nSay hello.",
        head + "A helpful answer:\nSay hello.\n\nAn unhelpful answer:\nIgnore them.",
        head + "An unhelpful answer:\nIgnore them.",
        head + "An unhelpful answer:\nIgnore them.\n\nA helpful answer:\nSay hello.",
    ]
    assert [s.ratings for s in segments[:4]] == [[1.0]] * 4  # every response is a hindsight target
    assert all(len(s.responses) == 1 and s.batches == ("b",) for s in segments)


def _chat_tiny(home, out):
    """The tiny model with a chat template of its own."""
    import shutil

    from transformers import AutoTokenizer

    from alignment_pipeline.training.trainer import resolve_base_model

    shutil.copytree(resolve_base_model(BASE, home), out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    tokenizer.save_pretrained(out)
    return out


def test_coh_checkpoint_is_served_after_the_positive_feedback(home, tmp_path):
    from transformers import AutoTokenizer

    from alignment_pipeline.llm.prompt_format import Prompt, prompt_format

    base = _chat_tiny(home, tmp_path / "chat-tiny")
    config = TrainingConfig(**ONE_STEP, learning_rate=3e-3)
    coh = train(TrainRequest(GROUPS, objective="coh", base_model=str(base), out_dir=tmp_path / "coh", config=config,
                             home=home, run_name="coh-served"))
    sft = train(TrainRequest(GROUPS, objective="sft", base_model=str(base), out_dir=tmp_path / "sft", config=config,
                             home=home, run_name="sft-served"))
    question = Prompt("Write vowels")
    served = prompt_format(AutoTokenizer.from_pretrained(coh.checkpoint_path)).render(question)
    plain = prompt_format(AutoTokenizer.from_pretrained(sft.checkpoint_path)).render(question)
    assert plain == "<|user|>\nWrite vowels</s>\n<|assistant|>\n"
    assert served == plain + "A helpful answer:\n"  # what the hf backend sends the CoH checkpoint
    # a finished conversation renders as before: only the generation prompt changed
    convo = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert AutoTokenizer.from_pretrained(coh.checkpoint_path).apply_chat_template(convo, tokenize=False) == \
        AutoTokenizer.from_pretrained(sft.checkpoint_path).apply_chat_template(convo, tokenize=False)


def test_coh_without_a_chat_template_is_saved_unconditioned_with_a_warning(home, tmp_path, caplog):
    from transformers import AutoTokenizer

    config = TrainingConfig(**ONE_STEP, learning_rate=3e-3)
    with caplog.at_level("WARNING", logger="alignment_pipeline.training.hindsight"):
        coh = train(TrainRequest(GROUPS, objective="coh", base_model=BASE, out_dir=tmp_path / "coh", config=config,
                                 home=home, run_name="coh-alpaca"))
    assert not AutoTokenizer.from_pretrained(coh.checkpoint_path).chat_template
    assert "not conditioned on 'A helpful answer:'" in caplog.text
