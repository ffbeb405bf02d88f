"""Loss functions against values worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alignment_pipeline.training.losses import (
    LossOutput,
    bradley_terry_loss,
    dpo_loss,
    length_balanced_pairs,
    rrhf_loss,
    sequence_nll,
    sft_loss,
    sppo_loss,
    sppo_win_rates,
    stable_alignment_loss,
)

NAN = float("nan")
INF = float("inf")


def t(rows, dtype=torch.float32, requires_grad=False):
    return torch.tensor(rows, dtype=dtype, requires_grad=requires_grad)


def m(rows):
    return torch.tensor(rows, dtype=torch.bool)


def close(a, b, tol=1e-6):
    a = a.detach() if isinstance(a, torch.Tensor) else a
    return abs(float(a) - float(b)) <= tol


# ------------------------------------------------------------------------------------- Stable Alignment
# Common case A: one prompt, three distinct ratings; margin 2, rating_scale 3, ratio 0.5.
#   nll = [1, 2, 3], ratings = [7, 4, 1] -> top = {0}, ℓ_top = 1
#   h_1 = 1 − 2 + (7 − 4)/3 × 2 = −1 + 2 = 1
#   h_2 = 1 − 3 + (7 − 1)/3 × 2 = −2 + 4 = 2
#   mean: 1 + 0.5 × (1 + 2)/2 = 1.75        max: 1 + 0.5 × 2 = 2.0
SA_A = dict(margin=2.0, rating_scale=3.0, ratio=0.5)


def test_sa_three_distinct_ratings_mean():
    nll = t([[1.0, 2.0, 3.0]], requires_grad=True)
    out = stable_alignment_loss(nll, t([[7.0, 4.0, 1.0]]), m([[True, True, True]]), **SA_A)
    assert isinstance(out, LossOutput)
    assert close(out.loss, 1.75)
    assert close(out.sft, 1.0) and close(out.hinge, 0.75) and out.active_margin_share == 1.0
    assert out.n_prompts == 1
    out.loss.backward()
    # d/dnll_0 = 1 (ℓ_top) + 0.5 × mean(+1, +1) = 1.5; d/dnll_i = 0.5 × (−1/2) = −0.25 for each negative
    assert torch.allclose(nll.grad, t([[1.5, -0.25, -0.25]]))


def test_sa_three_distinct_ratings_max():
    nll = t([[1.0, 2.0, 3.0]], requires_grad=True)
    out = stable_alignment_loss(nll, t([[7.0, 4.0, 1.0]]), m([[True, True, True]]), aggregate="max", **SA_A)
    assert close(out.loss, 2.0)
    assert close(out.hinge, 1.0)  # 0.5 × max(1, 2)
    out.loss.backward()
    # only h_2 is the max: d/dnll_0 = 1 + 0.5 = 1.5, d/dnll_2 = −0.5, nll_1 gets nothing
    assert torch.allclose(nll.grad, t([[1.5, 0.0, -0.5]]))


def test_sa_ties_at_top_are_averaged_and_tied_lower_both_negatives():
    # nll = [2, 3, 1, 2], ratings = [5, 5, 2, 2], margin 1, rating_scale 3, ratio 1
    #   top = {0, 1} -> ℓ_top = (2 + 3)/2 = 2.5 (the other top is not a negative: a tie carries no preference)
    #   h_2 = 2.5 − 1 + (5 − 2)/3 × 1 = 2.5;  h_3 = 2.5 − 2 + 1 = 1.5  (both rated 2: both negatives)
    #   mean: 2.5 + 1 × (2.5 + 1.5)/2 = 4.5      max: 2.5 + 2.5 = 5.0
    nll, ratings, mask = t([[2.0, 3.0, 1.0, 2.0]]), t([[5.0, 5.0, 2.0, 2.0]]), m([[True] * 4])
    kw = dict(margin=1.0, rating_scale=3.0, ratio=1.0)
    assert close(stable_alignment_loss(nll, ratings, mask, **kw).loss, 4.5)
    assert close(stable_alignment_loss(nll, ratings, mask, aggregate="max", **kw).loss, 5.0)
    out = stable_alignment_loss(nll, ratings, mask, **kw)
    assert close(out.sft, 2.5) and close(out.hinge, 2.0)


def test_sa_ties_below_the_top():
    # nll = [1, 1.5, 0.5], ratings = [6, 3, 3], margin 3, rating_scale 6, ratio 0.2
    #   ℓ_top = 1;  h_1 = 1 − 1.5 + 3/6 × 3 = 1.0;  h_2 = 1 − 0.5 + 1.5 = 2.0
    #   mean: 1 + 0.2 × 1.5 = 1.3     max: 1 + 0.2 × 2 = 1.4
    nll, ratings, mask = t([[1.0, 1.5, 0.5]]), t([[6.0, 3.0, 3.0]]), m([[True] * 3])
    kw = dict(margin=3.0, rating_scale=6.0, ratio=0.2)
    assert close(stable_alignment_loss(nll, ratings, mask, **kw).loss, 1.3)
    assert close(stable_alignment_loss(nll, ratings, mask, aggregate="max", **kw).loss, 1.4)


def test_sa_all_tied_is_sft_on_all():
    # ratings [4, 4]: both top, no negative -> ℓ_top = (1 + 3)/2 = 2, hinge share undefined -> 0
    out = stable_alignment_loss(t([[1.0, 3.0]]), t([[4.0, 4.0]]), m([[True, True]]), **SA_A)
    assert close(out.loss, 2.0) and out.hinge == 0.0 and out.active_margin_share == 0.0


def test_sa_one_response_is_its_nll():
    out = stable_alignment_loss(t([[2.5, NAN]]), t([[3.0, NAN]]), m([[True, False]]), **SA_A)
    assert close(out.loss, 2.5) and close(out.sft, 2.5) and out.n_prompts == 1


def test_sa_fully_masked_prompt_is_ignored():
    # prompt 0 = case A (1.75); prompt 1 has no responses (garbage inside); prompt 2 one response, nll 0.25
    #   mean over the two prompts with a response: (1.75 + 0.25)/2 = 1.0
    nll = t([[1.0, 2.0, 3.0], [NAN, INF, -INF], [0.25, 9.0, 9.0]], requires_grad=True)
    ratings = t([[7.0, 4.0, 1.0], [NAN, NAN, NAN], [1.0, 9.0, 9.0]])
    mask = m([[True, True, True], [False, False, False], [True, False, False]])
    out = stable_alignment_loss(nll, ratings, mask, **SA_A)
    assert close(out.loss, 1.0) and out.n_prompts == 2
    # components: sft = (1 + 0.25)/2; hinge only over the one prompt with a negative
    assert close(out.sft, 0.625) and close(out.hinge, 0.75)
    out.loss.backward()
    assert torch.isfinite(nll.grad).all()
    assert torch.allclose(nll.grad, t([[0.75, -0.125, -0.125], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_sa_masked_nan_and_inf_do_not_leak(aggregate):
    # Case A plus a fourth, masked slot holding NaN NLL and an inf rating (which would otherwise be the top)
    nll = t([[1.0, 2.0, 3.0, NAN]], requires_grad=True)
    out = stable_alignment_loss(
        nll, t([[7.0, 4.0, 1.0, INF]]), m([[True, True, True, False]]), aggregate=aggregate, **SA_A
    )
    assert close(out.loss, 1.75 if aggregate == "mean" else 2.0)
    out.loss.backward()
    assert torch.isfinite(nll.grad).all() and nll.grad[0, 3] == 0.0


def test_sa_hinge_clipped_at_zero():
    # nll = [1, 3], ratings = [5, 4], margin 1, rating_scale 1 -> h = 1 − 3 + 1 = −1 < 0 -> no hinge
    nll = t([[1.0, 3.0]], requires_grad=True)
    out = stable_alignment_loss(
        nll, t([[5.0, 4.0]]), m([[True, True]]), margin=1.0, rating_scale=1.0, ratio=0.7
    )
    assert close(out.loss, 1.0) and out.hinge == 0.0 and out.active_margin_share == 0.0
    out.loss.backward()
    assert torch.equal(nll.grad, t([[1.0, 0.0]]))


def test_sa_active_margin_share_counts_prompts_with_positive_hinge():
    # prompt 0: case A (h > 0, active); prompt 1: the clipped case (h = −1, inactive); prompt 2: no negative
    nll = t([[1.0, 2.0, 3.0], [1.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    ratings = t([[7.0, 4.0, 1.0], [5.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    mask = m([[True, True, True], [True, True, False], [True, False, False]])
    # prompt 1 with SA_A: h = 1 − 3 + (5 − 2)/3 × 2 = 0 -> not > 0, inactive
    out = stable_alignment_loss(nll, ratings, mask, **SA_A)
    assert out.active_margin_share == 0.5  # 1 active of 2 prompts with a negative
    assert close(out.hinge, 0.375)  # (0.75 + 0)/2
    assert close(out.loss, (1.75 + 1.0 + 4.0) / 3)


def test_sa_ratio_zero_is_sft_on_best():
    # prompt 0: case A -> ℓ_top = 1; prompt 1: ties at top [2, 3] -> 2.5; mean = 1.75
    nll = t([[1.0, 2.0, 3.0, 0.0], [2.0, 3.0, 1.0, 2.0]])
    ratings = t([[7.0, 4.0, 1.0, 0.0], [5.0, 5.0, 2.0, 2.0]])
    mask = m([[True, True, True, False], [True, True, True, True]])
    for aggregate in ("mean", "max"):
        out = stable_alignment_loss(
            nll, ratings, mask, margin=10.0, rating_scale=7.0, ratio=0.0, aggregate=aggregate
        )
        assert close(out.loss, 1.75)


def test_sa_no_valid_response_gives_connected_zero():
    nll = t([[NAN, 1.0]], requires_grad=True)
    out = stable_alignment_loss(nll, t([[1.0, 2.0]]), m([[False, False]]), **SA_A)
    assert float(out.loss.detach()) == 0.0 and out.n_prompts == 0 and out.loss.grad_fn is not None
    out.loss.backward()
    assert torch.equal(nll.grad, torch.zeros_like(nll))


def _sa_reference(nll, ratings, mask, margin, rating_scale, ratio, aggregate):
    """Per-prompt loop over plain floats, straight from the formula."""
    per_prompt = []
    for row_n, row_r, row_m in zip(nll, ratings, mask, strict=True):
        items = [(n, r) for n, r, ok in zip(row_n, row_r, row_m, strict=True) if ok]
        if not items:
            continue
        r_top = max(r for _, r in items)
        l_top = sum(n for n, r in items if r == r_top) / sum(1 for _, r in items if r == r_top)
        hs = [l_top - n + (r_top - r) / rating_scale * margin for n, r in items if r < r_top]
        if hs:
            agg = sum(hs) / len(hs) if aggregate == "mean" else max(hs)
            per_prompt.append(l_top + ratio * max(0.0, agg))
        else:
            per_prompt.append(l_top)
    return sum(per_prompt) / len(per_prompt)


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_sa_matches_per_prompt_loop_on_random_batches(aggregate):
    rng = random.Random(7)
    for _ in range(20):
        b, k = rng.randint(1, 6), rng.randint(1, 5)
        nll = [[rng.uniform(0.2, 4.0) for _ in range(k)] for _ in range(b)]
        ratings = [[float(rng.randint(1, 4)) for _ in range(k)] for _ in range(b)]  # small range: many ties
        mask = [[rng.random() < 0.8 for _ in range(k)] for _ in range(b)]
        mask[0][0] = True
        kw = dict(margin=rng.choice([1.0, 10.0]), rating_scale=7.0, ratio=rng.choice([0.2, 1.0]))
        got = stable_alignment_loss(t(nll), t(ratings), m(mask), aggregate=aggregate, **kw).loss
        assert close(got, _sa_reference(nll, ratings, mask, aggregate=aggregate, **kw), tol=1e-5)


def test_sa_bf16_input_computes_in_float32():
    nll = t([[1.0, 2.0, 3.0]], dtype=torch.bfloat16, requires_grad=True)  # exactly representable
    out = stable_alignment_loss(nll, t([[7.0, 4.0, 1.0]], dtype=torch.bfloat16), m([[True] * 3]), **SA_A)
    assert out.loss.dtype == torch.float32 and close(out.loss, 1.75)
    out.loss.backward()
    assert nll.grad.dtype == torch.bfloat16
    assert torch.allclose(nll.grad.float(), t([[1.5, -0.25, -0.25]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sa_on_cuda():
    nll = t([[1.0, 2.0, 3.0, NAN]]).cuda().requires_grad_()
    ratings, mask = t([[7.0, 4.0, 1.0, NAN]]).cuda(), m([[True, True, True, False]]).cuda()
    out = stable_alignment_loss(nll, ratings, mask, **SA_A)
    assert out.loss.device.type == "cuda" and close(out.loss.cpu(), 1.75)
    out.loss.backward()
    assert torch.allclose(nll.grad.cpu(), t([[1.5, -0.25, -0.25, 0.0]]))


def test_sa_rejects_bad_input():
    nll, ratings, mask = t([[1.0, 2.0]]), t([[1.0, 2.0]]), m([[True, True]])
    with pytest.raises(ValueError, match="aggregate"):
        stable_alignment_loss(nll, ratings, mask, aggregate="sum", **SA_A)
    with pytest.raises(ValueError, match="shape"):
        stable_alignment_loss(t([[1.0, 2.0, 3.0]]), ratings, mask, **SA_A)
    with pytest.raises(TypeError, match="bool"):
        stable_alignment_loss(nll, ratings, mask.float(), **SA_A)
    with pytest.raises(ValueError, match="ratings holds NaN"):
        stable_alignment_loss(nll, t([[1.0, NAN]]), mask, **SA_A)
    with pytest.raises(ValueError, match="rating_scale"):
        stable_alignment_loss(nll, ratings, mask, margin=1.0, rating_scale=0.0, ratio=1.0)


# ------------------------------------------------------------------------------------------------- SFT


def test_sft_mean_over_valid_responses():
    # valid NLLs 1, 2 (prompt 0) and 4 (prompt 1): (1 + 2 + 4)/3 = 7/3
    nll = t([[1.0, 2.0, NAN], [4.0, INF, 0.0]], requires_grad=True)
    out = sft_loss(nll, m([[True, True, False], [True, False, False]]))
    assert close(out.loss, 7 / 3) and close(out.sft, 7 / 3) and out.n_prompts == 2
    assert out.extra["n_responses"] == 3
    out.loss.backward()
    assert torch.allclose(nll.grad, t([[1 / 3, 1 / 3, 0.0], [1 / 3, 0.0, 0.0]]))


# ------------------------------------------------------------------------------------------------- DPO


def test_dpo_hand_computed():
    # Δ = (−10 − −11) − (−12 − −11) = 1 + 1 = 2; β = 0.1 -> logits 0.2
    # loss = −log σ(0.2) = log(1 + e^−0.2) = log(1.8187308) = 0.5981389
    out = dpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), beta=0.1)
    assert close(out.loss, 0.5981389, tol=1e-6)
    assert close(out.chosen_reward, 0.1) and close(out.rejected_reward, -0.1) and out.reward_accuracy == 1.0
    # label smoothing ε = 0.25: 0.75 × 0.5981389 + 0.25 × log(1 + e^0.2) = 0.4486042 + 0.25 × 0.7981389
    ls = dpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), beta=0.1, label_smoothing=0.25)
    assert close(ls.loss, 0.75 * 0.5981389 + 0.25 * 0.7981389, tol=1e-6)


def _trl_sigmoid_dpo(pc, pr, rc, rr, beta):
    """TRL 1.16's own loss code (`DPOTrainer._compute_loss`, loss_type="sigmoid") on given log-probs.

    The method reads per-token log-probs from the model output and sums them over the completion mask;
    a stand-in model returns one completion token per row carrying the whole summed log-prob, and the
    reference log-probs go in as precomputed ones, so TRL's arithmetic runs unchanged on our numbers.
    """
    from trl import DPOTrainer

    logps = torch.cat([pc, pr]).unsqueeze(1)  # [2N, 1], batch is [chosen; rejected] as TRL expects
    rows = logps.shape[0]

    class _Model:
        training = True

        def __call__(self, **kwargs):
            assert kwargs["fused_lm_head"] is True
            zeros = torch.zeros_like(logps)
            return SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    model = _Model()
    trainer = SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(
            device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x
        ),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(rows, 2, dtype=torch.long),
        "attention_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]] * rows),
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_equals_trl(beta):
    gen = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (-50 * torch.rand(8, generator=gen) for _ in range(4))
    ours = dpo_loss(pc, pr, rc, rr, beta=beta)
    theirs, metrics = _trl_sigmoid_dpo(pc, pr, rc, rr, beta)
    assert abs(float(ours.loss) - float(theirs)) <= 1e-6
    assert close(ours.chosen_reward, metrics["rewards/chosen"][0], tol=1e-5)
    assert close(ours.rejected_reward, metrics["rewards/rejected"][0], tol=1e-5)
    assert ours.reward_accuracy == metrics["rewards/accuracies"][0]


def test_dpo_gradient_and_validation():
    pc = t([-10.0], requires_grad=True)
    out = dpo_loss(pc, t([-12.0]), t([-11.0]), t([-11.0]), beta=0.1)
    out.loss.backward()
    # d/dpc −log σ(βΔ) = −β (1 − σ(0.2)) = −0.1 × 0.4501660 = −0.0450166
    assert close(pc.grad, -0.1 * (1 - 1 / (1 + math.exp(-0.2))))
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(t([1.0, 2.0]), t([1.0]), t([1.0]), t([1.0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(t([1.0]), t([1.0]), t([1.0]), t([1.0]), label_smoothing=0.7)


# ------------------------------------------------------------------------------------------------ SPPO


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_sppo_win_rates_hand_computed():
    # ratings [3, 1] (third slot masked): P(0 ≻ 1) = σ(2) = 0.8807971, P(1 ≻ 0) = σ(−2) = 0.1192029
    #   P̂_0 = (½ + 0.8807971)/2 = 0.6903985;  P̂_1 = (½ + 0.1192029)/2 = 0.3096015
    # ratings [2, 2, 5]: P̂_0 = P̂_1 = (½ + ½ + σ(−3))/3;  P̂_2 = (2σ(3) + ½)/3
    rates = sppo_win_rates(
        t([[3.0, 1.0, NAN], [2.0, 2.0, 5.0]]), m([[True, True, False], [True, True, True]]), temperature=1.0
    )
    assert close(rates[0, 0], (0.5 + _sig(2)) / 2) and close(rates[0, 1], (0.5 + _sig(-2)) / 2)
    assert math.isnan(float(rates[0, 2]))
    assert close(rates[1, 0], (1.0 + _sig(-3)) / 3) and close(rates[1, 1], rates[1, 0])
    assert close(rates[1, 2], (2 * _sig(3) + 0.5) / 3)
    # win-rates of a prompt sum to n/2 (each pair contributes σ(d) + σ(−d) = 1, self ½ each)
    assert close(rates[1].sum(), 1.5)


def test_sppo_loss_hand_computed():
    # policy [−5, −7], ref [−6, −6] -> log-ratio [1, −1]; η = 2
    # targets: 2 × (0.6903985 − ½) = 0.3807971 and −0.3807971
    # squares: (1 − 0.3807971)² = 0.6192029² = 0.3834123 (both); mean over the 2 valid responses
    policy = t([[-5.0, -7.0, NAN]], requires_grad=True)
    win = sppo_win_rates(t([[3.0, 1.0, 0.0]]), m([[True, True, False]]), temperature=1.0)
    out = sppo_loss(policy, t([[-6.0, -6.0, INF]]), win, m([[True, True, False]]), eta=2.0)
    target = 2 * ((0.5 + _sig(2)) / 2 - 0.5)
    assert close(out.loss, (1 - target) ** 2)
    assert close(out.extra["log_ratio"], 0.0) and close(out.extra["target"], 0.0)
    out.loss.backward()
    # d/dpolicy_0 = 2 (1 − target) / 2; policy_1: 2 (−1 + target) / 2; masked: 0
    assert torch.allclose(policy.grad, t([[1 - target, -(1 - target), 0.0]]))


# ------------------------------------------------------------------------------------------------ RRHF


def test_rrhf_hand_computed():
    # prompt 0: p = [−1, −2, −0.5], ratings [3, 2, 1], nll [1, 2, 0.5]
    #   pairs r_i < r_j: (1,0): max(0, −2 + 1) = 0; (2,0): max(0, −0.5 + 1) = 0.5; (2,1): max(0, −0.5 + 2) = 1.5
    #   rank = 2.0; sft = nll of best = 1.0 -> 3.0
    # prompt 1: ratings [2, 2] tie -> no pairs; sft = mean(1, 3) = 2.0; third slot masked with garbage
    # loss = (3.0 + 2.0)/2 = 2.5
    mean_logps = t([[-1.0, -2.0, -0.5], [-1.0, -3.0, NAN]], requires_grad=True)
    nll = t([[1.0, 2.0, 0.5], [1.0, 3.0, NAN]], requires_grad=True)
    out = rrhf_loss(
        mean_logps, nll, t([[3.0, 2.0, 1.0], [2.0, 2.0, 9.0]]), m([[True] * 3, [True, True, False]])
    )
    assert close(out.loss, 2.5) and close(out.extra["rank"], 1.0) and close(out.sft, 1.5)
    out.loss.backward()
    # p_2 is the loser in two active pairs: +2/2 = 1; p_0 winner in (2,0): −1/2; p_1 winner in (2,1): −1/2
    assert torch.allclose(mean_logps.grad, t([[-0.5, -0.5, 1.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(nll.grad, t([[0.5, 0.0, 0.0], [0.25, 0.25, 0.0]]))


# -------------------------------------------------------------------------------------- Bradley–Terry


def test_bradley_terry_hand_computed():
    # s_c = [2, 0], s_r = [0, 1]
    #   −log σ(2) = log(1 + e^−2) = 0.1269280;  −log σ(−1) = log(1 + e) = 1.3132617;  mean 0.7200948
    #   centering mean((s_c + s_r)²) = (4 + 1)/2 = 2.5;  prior mean(s_c² + s_r²) = (4 + 1)/2 = 2.5
    c, r = t([2.0, 0.0], requires_grad=True), t([0.0, 1.0])
    bt = (math.log1p(math.exp(-2)) + math.log1p(math.e)) / 2
    out = bradley_terry_loss(c, r)
    assert close(out.loss, bt) and out.reward_accuracy == 0.5
    assert close(out.chosen_reward, 1.0) and close(out.rejected_reward, 0.5)
    full = bradley_terry_loss(c, r, center_coef=0.01, score_reg=0.1)
    assert close(full.loss, bt + 0.01 * 2.5 + 0.1 * 2.5)
    assert close(full.extra["center"], 2.5) and close(full.extra["score_reg"], 2.5)
    # weights [3, 1]: (3 × 0.1269280 + 1.3132617)/4 = 0.4235115
    w = bradley_terry_loss(c, r, weights=t([3.0, 1.0]))
    assert close(w.loss, (3 * math.log1p(math.exp(-2)) + math.log1p(math.e)) / 4)
    full.loss.backward()
    # d/ds_c0 = −(1 − σ(2))/2 + 0.01 × 2 (2 + 0)/2 + 0.1 × 2 × 2/2 = −0.0596029 + 0.02 + 0.2
    assert close(c.grad[0], -(1 - _sig(2)) / 2 + 0.02 + 0.2)
    with pytest.raises(ValueError, match="weights"):
        bradley_terry_loss(c, r, weights=t([-1.0, 1.0]))


# ------------------------------------------------------------------------------------- length balancing
#   idx  chosen  rejected  d = c − r  bucket (|d| // 10)  side
#   0    50      50        0          -                   equal: kept
#   1    30      25        5          0                   longer won
#   2    30      22        8          0                   longer won
#   3    20      27        −7         0                   shorter won
#   4    40      15        25         2                   longer won (alone in its bucket: dropped)
#   5    12      25        −13        1                   shorter won
#   6    26      12        14         1                   longer won
#   7    30      18        12         1                   longer won
#   kept: 0, 3, 5, one of {1, 2}, one of {6, 7}
CHOSEN = [50, 30, 30, 20, 40, 12, 26, 30]
REJECTED = [50, 25, 22, 27, 15, 25, 12, 18]


def test_length_balanced_pairs_hand_computed():
    kept = length_balanced_pairs(CHOSEN, REJECTED, bucket_width=10, seed=0)
    assert kept == sorted(kept) and len(kept) == 5
    assert {0, 3, 5} <= set(kept) and 4 not in kept
    assert len({1, 2} & set(kept)) == 1 and len({6, 7} & set(kept)) == 1
    assert length_balanced_pairs(CHOSEN, REJECTED, bucket_width=10, seed=0) == kept  # deterministic
    choices = {tuple(length_balanced_pairs(CHOSEN, REJECTED, bucket_width=10, seed=s)) for s in range(20)}
    assert len(choices) > 1  # the seed decides which majority pairs survive
    # one bucket wide enough for everything: longer won {1, 2, 4, 6, 7}, shorter won {3, 5} -> 2 + 2 + equal
    assert len(length_balanced_pairs(CHOSEN, REJECTED, bucket_width=100)) == 5


def test_length_balanced_pairs_balances_every_bucket():
    gen = torch.Generator().manual_seed(1)
    c = torch.randint(1, 200, (500,), generator=gen)
    r = torch.randint(1, 200, (500,), generator=gen)
    kept = torch.tensor(length_balanced_pairs(c, r, bucket_width=25, seed=4))
    d = c[kept] - r[kept]
    for b in (d.abs() // 25).unique():
        in_b = (d != 0) & (d.abs() // 25 == b)
        assert int(((d > 0) & in_b).sum()) == int(((d < 0) & in_b).sum())
    assert int((d == 0).sum()) == int((c == r).sum())
    with pytest.raises(ValueError, match="entries"):
        length_balanced_pairs([1, 2], [1])


# ------------------------------------------------------------------------------------------ sequence_nll


def test_sequence_nll_hand_computed():
    # row 0: response tokens at 1, 2 -> sum −5, mean −2.5, nll 2.5 (NaN at a prompt position ignored)
    # row 1: one response token −0.5;  row 2: no response token -> sum 0, mean/nll NaN
    logps = t([[-1.0, -2.0, -3.0, NAN], [-0.5, -INF, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0]], requires_grad=True)
    rmask = m([[False, True, True, False], [True, False, False, False], [False] * 4])
    nll, lsum, lmean = sequence_nll(logps, rmask)
    assert torch.allclose(nll[:2], t([2.5, 0.5])) and math.isnan(float(nll[2].detach()))
    assert torch.allclose(lsum, t([-5.0, -0.5, 0.0])) and torch.allclose(lmean[:2], t([-2.5, -0.5]))
    # the empty row, masked out downstream, sends exactly zero gradient
    out = sft_loss(nll.reshape(1, 3), m([[True, True, False]]))
    out.loss.backward()
    assert torch.isfinite(logps.grad).all()
    expected = t([[0.0, -0.25, -0.25, 0.0], [-0.5, 0.0, 0.0, 0.0], [0.0] * 4])  # ½ × d(nll)/d(logp)
    assert torch.allclose(logps.grad, expected)


def test_sequence_nll_bf16():
    logps = t([[-1.0, -2.0]], dtype=torch.bfloat16)
    nll, lsum, lmean = sequence_nll(logps, m([[True, True]]))
    assert nll.dtype == torch.float32 and close(nll[0], 1.5)
