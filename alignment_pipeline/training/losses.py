"""Training losses as pure functions over per-response tensors.

Every function takes tensors already reduced to one number per response (or per pair) and returns a
`LossOutput`: the differentiable scalar `loss` plus detached float components for logging.

Conventions shared by all functions:
- Grouped inputs are `[B, K]`: B prompts, up to K responses each; `mask` (bool `[B, K]`) says which
  responses exist. Masked entries may hold anything (NaN, inf, padding): they are replaced with
  `torch.where` before any arithmetic, so they reach neither the loss nor its gradient.
- All arithmetic runs in float32, whatever the input dtype (bf16 log-probs are upcast; gradients flow
  back to the original tensors in their own dtype).
- A loss never waits for the device: its components stay on it until they are read (an attribute, `metrics()`,
  or `read_outputs` for many losses at once: one transfer for all, so a training step syncs once). Checks of
  ratings run at once on CPU tensors and, on an accelerator, when the components are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LossOutput",
    "bradley_terry_loss",
    "coh_loss",
    "dpo_loss",
    "length_balanced_pairs",
    "read_outputs",
    "rrhf_loss",
    "sequence_nll",
    "sft_loss",
    "sppo_loss",
    "sppo_sample_win_rates",
    "sppo_win_rates",
    "stable_alignment_loss",
]


_COMPONENTS = ("sft", "hinge", "active_margin_share", "chosen_reward", "rejected_reward", "reward_accuracy")


class LossOutput:
    """A training loss and its detached components.

    `loss` is the differentiable scalar to back-propagate. The other attributes are plain Python numbers for
    logging; one a loss does not define stays None. `n_prompts` counts the groups (prompts or pairs) that
    contributed to `loss`. `extra` holds loss-specific components (e.g. the RRHF ranking term). Components may
    be given as tensors: they are read to the host, all in one transfer, the first time any is read, and the
    deferred `checks` ((flag tensor, message) pairs) raise ValueError then.
    """

    def __init__(self, loss: Tensor, n_prompts: int | Tensor = 0, sft: float | Tensor | None = None,
                 hinge: float | Tensor | None = None, active_margin_share: float | Tensor | None = None,
                 chosen_reward: float | Tensor | None = None, rejected_reward: float | Tensor | None = None,
                 reward_accuracy: float | Tensor | None = None, extra: dict[str, float | Tensor] | None = None,
                 checks: Sequence[tuple[Tensor, str]] = ()):
        self.loss = loss
        values = dict(zip(_COMPONENTS, (sft, hinge, active_margin_share, chosen_reward, rejected_reward,
                                        reward_accuracy), strict=True))
        values["n_prompts"] = n_prompts
        values.update({f"extra/{k}": v for k, v in (extra or {}).items()})
        self._values = {k: v.detach() if isinstance(v, Tensor) else v for k, v in values.items()}
        self._loss_value: float | None = None
        self._checks = list(checks)

    # Reading: everything pending goes to the host together.
    def _pending(self) -> list[tuple[str, Tensor]]:
        out = [(k, v) for k, v in self._values.items() if isinstance(v, Tensor)]
        if self._loss_value is None:
            out.append(("loss", self.loss.detach()))
        out += [(f"check/{i}", flag) for i, (flag, _) in enumerate(self._checks)]
        return out

    def _fill(self, values: dict[str, float]) -> None:
        failed = [msg for i, (_, msg) in enumerate(self._checks) if values.get(f"check/{i}")]
        self._checks = []
        for key, value in values.items():
            if key == "loss":
                self._loss_value = value
            elif not key.startswith("check/"):
                self._values[key] = value
        if failed:
            raise ValueError(failed[0])

    def _read(self) -> None:
        if self._pending():
            read_outputs([self])

    def _get(self, name: str):
        self._read()
        return self._values[name]

    n_prompts = property(lambda self: int(self._get("n_prompts")))
    sft = property(lambda self: self._get("sft"))
    hinge = property(lambda self: self._get("hinge"))
    active_margin_share = property(lambda self: self._get("active_margin_share"))
    chosen_reward = property(lambda self: self._get("chosen_reward"))
    rejected_reward = property(lambda self: self._get("rejected_reward"))
    reward_accuracy = property(lambda self: self._get("reward_accuracy"))

    @property
    def extra(self) -> dict[str, float]:
        self._read()
        return {k[len("extra/"):]: v for k, v in self._values.items() if k.startswith("extra/")}

    def metrics(self) -> dict[str, float]:
        """All defined components (and the loss value) as a flat dict of floats."""
        self._read()
        out: dict[str, float] = {"loss": self._loss_value, "n_prompts": float(self.n_prompts)}
        for name in _COMPONENTS:
            value = self._values[name]
            if value is not None:
                out[name] = value
        out.update(self.extra)
        return out


def read_outputs(outputs: Sequence[LossOutput]) -> None:
    """Read the pending components (and loss values) of every output to the host in one transfer per device
    (a training step calls this once for all its micro-batches), then run their deferred checks."""
    by_device: dict[torch.device, list[tuple[int, str, Tensor]]] = {}
    for n, out in enumerate(outputs):
        for key, tensor in out._pending():
            by_device.setdefault(tensor.device, []).append((n, key, tensor))
    values: list[dict[str, float]] = [{} for _ in outputs]
    for items in by_device.values():
        host = torch.stack([t.float().reshape(()) for _, _, t in items]).tolist()
        for (n, key, _), value in zip(items, host, strict=True):
            values[n][key] = value
    for out, vals in zip(outputs, values, strict=True):
        out._fill(vals)


# ----------------------------------------------------------------------------------------------- checks


def _check_grouped(name: str, tensor: Tensor, mask: Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be a [B, K] tensor, got shape {tuple(tensor.shape)}")
    if tensor.shape != mask.shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)} but mask has shape {tuple(mask.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")


def _check_mask(mask: Tensor) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be a [B, K] tensor, got shape {tuple(mask.shape)}")
    if mask.shape[1] == 0:
        raise ValueError("mask has K = 0 responses per prompt; K must be >= 1")


def _check_paired(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"paired inputs must share one shape, got {shapes}")
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def _finite_checks(values: Tensor, mask: Tensor, name: str = "ratings") -> list[tuple[Tensor, str]]:
    """Non-finite `values` where mask is True: raised now on CPU (no device to wait for), else returned as a
    check the LossOutput runs when it is read."""
    flag = _bad_values(values, mask)
    message = f"{name} holds NaN or inf at a position where mask is True"
    if flag.device.type == "cpu":
        if bool(flag):
            raise ValueError(message)
        return []
    return [(flag, message)]


# ------------------------------------------------------------------------------------------- helpers


def sequence_nll(token_logps: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reduce per-token log-probs to per-sequence numbers.

    `token_logps` is `[N, T]` (any leading dims work; the last one is time), the log-probability of each
    target token; `response_mask` (bool, same shape) marks the response tokens that count. Positions
    outside the mask may hold anything. Returns float32 tensors of the leading shape:
    `(nll_mean, logp_sum, logp_mean)` — length-normalised NLL, summed log-prob, mean log-prob.

    A row with no response token has `logp_sum = 0` and NaN `nll_mean` / `logp_mean`; mark it invalid in
    the loss's `mask` (the grouped losses ignore masked entries, NaN included). The NaN carries no
    gradient: the division is guarded, so such rows send exactly zero gradient to `token_logps`.
    """
    if token_logps.shape != response_mask.shape:
        raise ValueError(
            f"token_logps has shape {tuple(token_logps.shape)} but response_mask has {tuple(response_mask.shape)}"
        )
    if response_mask.dtype != torch.bool:
        raise TypeError(f"response_mask must be a bool tensor, got {response_mask.dtype}")
    logps = torch.where(response_mask, token_logps.float(), 0.0)
    logp_sum = logps.sum(dim=-1)
    count = response_mask.sum(dim=-1)
    logp_mean = torch.where(count > 0, logp_sum / count.clamp(min=1), float("nan"))
    return -logp_mean, logp_sum, logp_mean


def _top_and_neg(ratings: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per prompt: the top-rated valid responses and the strictly lower-rated ones.

    Returns (clean ratings, top rating per prompt, is_top, is_neg, has_valid); masked ratings become 0.
    """
    r = torch.where(mask, ratings.float(), 0.0)
    has_valid = mask.any(dim=1)
    r_top = torch.where(mask, r, float("-inf")).amax(dim=1)
    r_top = torch.where(has_valid, r_top, 0.0)
    # Ties with the top are tops (no preference between them); everything else valid is strictly lower.
    is_top = mask & (r == r_top.unsqueeze(1))
    is_neg = mask & ~is_top
    return r, r_top, is_top, is_neg, has_valid


def _masked_mean_rows(values: Tensor, select: Tensor) -> Tensor:
    return torch.where(select, values, 0.0).sum(dim=1) / select.sum(dim=1).clamp(min=1)


def _bad_values(values: Tensor, mask: Tensor) -> Tensor:
    return (mask & ~torch.isfinite(values)).any()


# ------------------------------------------------------------------------------------ stable alignment


def stable_alignment_loss(
    nll: Tensor,
    ratings: Tensor,
    mask: Tensor,
    *,
    margin: float,
    rating_scale: float,
    ratio: float,
    aggregate: Literal["mean", "max"] = "mean",
) -> LossOutput:
    """The Stable Alignment (contrastive) loss of arXiv 2305.16960, vectorised over prompts.

    `nll` and `ratings` are float `[B, K]`: the length-normalised NLL of each response and its rating;
    `mask` (bool `[B, K]`) marks the responses that exist. Per prompt:

    - top = the valid responses with the highest rating; ℓ_top = their mean NLL;
    - neg = the valid responses rated strictly lower (ties carry no preference, so they are never negatives);
    - for each negative i: h_i = ℓ_top − nll_i + (r_top − r_i) / rating_scale × margin;
    - per-prompt loss = ℓ_top + ratio × max(0, agg_i h_i), agg = mean (default) or max;
      ℓ_top alone when there is no negative.

    The loss is the mean over prompts with at least one valid response. With none at all it is a zero
    that stays connected to `nll`, so `backward()` works. Components: `sft` (mean ℓ_top), `hinge` (mean of
    ratio × max(0, agg h) over prompts with a negative), `active_margin_share` (share of those prompts whose
    agg h > 0), `n_prompts` (prompts with a valid response). Ratings must be finite where mask is True.
    """
    _check_mask(mask)
    _check_grouped("nll", nll, mask)
    _check_grouped("ratings", ratings, mask)
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if not rating_scale > 0:
        raise ValueError(f"rating_scale must be > 0, got {rating_scale}")

    r, r_top, is_top, is_neg, has_valid = _top_and_neg(ratings, mask)
    x = torch.where(mask, nll.float(), 0.0)

    l_top = _masked_mean_rows(x, is_top)
    h = l_top.unsqueeze(1) - x + (r_top.unsqueeze(1) - r) / rating_scale * margin
    has_neg = is_neg.any(dim=1)
    if aggregate == "mean":
        agg = _masked_mean_rows(h, is_neg)
    else:
        agg = torch.where(is_neg, h, float("-inf")).amax(dim=1)
        agg = torch.where(has_neg, agg, 0.0)
    hinge = torch.where(has_neg, ratio * F.relu(agg), 0.0)
    per_prompt = torch.where(has_valid, l_top + hinge, 0.0)

    n_valid = has_valid.sum()
    n_neg = has_neg.sum()
    loss = per_prompt.sum() / n_valid.clamp(min=1)

    sft_c = torch.where(has_valid, l_top, 0.0).sum() / n_valid.clamp(min=1)
    hinge_c = hinge.sum() / n_neg.clamp(min=1)
    active_c = (has_neg & (agg > 0)).sum() / n_neg.clamp(min=1)
    checks = _finite_checks(ratings, mask)
    return LossOutput(loss=loss, n_prompts=n_valid, sft=sft_c, hinge=hinge_c, active_margin_share=active_c,
                      checks=checks)


def sft_loss(nll: Tensor, mask: Tensor) -> LossOutput:
    """Supervised fine-tuning loss: the mean length-normalised NLL over the valid responses.

    Each valid response weighs the same (its NLL is already normalised by its length). With no valid
    response the loss is a zero still connected to `nll`. `n_prompts` counts prompts with a valid
    response; `extra["n_responses"]` counts the responses.
    """
    _check_mask(mask)
    _check_grouped("nll", nll, mask)
    x = torch.where(mask, nll.float(), 0.0)
    n_resp = mask.sum()
    loss = x.sum() / n_resp.clamp(min=1)
    return LossOutput(loss=loss, n_prompts=mask.any(dim=1).sum(), sft=loss, extra={"n_responses": n_resp})


def coh_loss(nll: Tensor, roles: Tensor, mask: Tensor, *, pretrain_weight: float) -> LossOutput:
    """Chain-of-Hindsight (arXiv 2302.02676, eq. 3): the hindsight term plus λ × the pretraining term.

    `roles` (float `[B, K]`) says what each valid response is: 1 a hindsight target, 0 a pretraining one
    (training/hindsight.py). loss = mean `nll` over the hindsight targets + pretrain_weight × mean `nll` over the
    pretraining ones, each mean 0 where the batch holds none. Components: `sft` (the hindsight term),
    `extra["pretrain"]` (the pretraining term before its weight), `extra["n_responses"]`.
    """
    _check_mask(mask)
    _check_grouped("nll", nll, mask)
    _check_grouped("roles", roles, mask)
    if not pretrain_weight >= 0:
        raise ValueError(f"pretrain_weight must be >= 0, got {pretrain_weight}")
    hindsight, pretrain = mask & (roles == 1), mask & (roles == 0)
    x = torch.where(mask, nll.float(), 0.0)
    l_hindsight = torch.where(hindsight, x, 0.0).sum() / hindsight.sum().clamp(min=1)
    l_pretrain = torch.where(pretrain, x, 0.0).sum() / pretrain.sum().clamp(min=1)
    loss = l_hindsight + pretrain_weight * l_pretrain
    stray = (mask & ~hindsight & ~pretrain).any()
    message = "Chain-of-Hindsight roles must be 1 (hindsight) or 0 (pretraining) where mask is True"
    checks = [(stray, message)] if stray.device.type != "cpu" else []
    if not checks and bool(stray):
        raise ValueError(message)
    return LossOutput(loss=loss, n_prompts=mask.any(dim=1).sum(), sft=l_hindsight, checks=checks,
                      extra={"pretrain": l_pretrain, "n_responses": mask.sum()})


# ------------------------------------------------------------------------------------------------- DPO


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Sigmoid DPO on summed response log-probs (one entry per pair), averaged over pairs.

    loss = mean[ −(1 − ε) log σ(β Δ) − ε log σ(−β Δ) ],  Δ = (π_c − ref_c) − (π_r − ref_r).

    With ε = 0 this is exactly TRL 1.16's `loss_type="sigmoid"` (trl/trainer/dpo_trainer.py,
    `DPOTrainer._compute_loss`: `-F.logsigmoid(self.beta * delta_score)`); ε > 0 is conservative DPO
    (the label-smoothed form TRL's sigmoid loss used before it moved ε to its 'robust' and 'exo' losses).
    Components: `chosen_reward`/`rejected_reward` (mean β·(π − ref)), `reward_accuracy` (share of pairs
    with chosen reward > rejected reward), `extra["reward_margin"]`.
    """
    _check_paired(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5], got {label_smoothing}")
    chosen_ratio = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_ratio = policy_rejected_logps.float() - ref_rejected_logps.float()
    logits = beta * (chosen_ratio - rejected_ratio)
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1.0 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    loss = losses.mean()

    chosen_reward = beta * chosen_ratio.detach()
    rejected_reward = beta * rejected_ratio.detach()
    return LossOutput(
        loss=loss,
        n_prompts=losses.numel(),
        chosen_reward=chosen_reward.mean(),
        rejected_reward=rejected_reward.mean(),
        reward_accuracy=(chosen_reward > rejected_reward).float().mean(),
        extra={"reward_margin": (chosen_reward - rejected_reward).mean()},
    )


# ------------------------------------------------------------------------------------------------ SPPO


def sppo_win_rates(ratings: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
    """Each response's estimated win-rate against the prompt's own samples, from ratings.

    P(i ≻ j) = σ((r_i − r_j) / temperature): the ratings play SPPO's preference model, `temperature` rating
    points making one logit (1: the samples_sppo view's σ(r_i − r_j)). P̂_i = mean over the prompt's valid
    responses j (self included, counted at σ(0) = ½) of P(i ≻ j). Returns float32 `[B, K]`; masked entries are
    NaN (no response, no win-rate).
    """
    _check_mask(mask)
    _check_grouped("ratings", ratings, mask)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    r = torch.where(mask, ratings.float(), 0.0) / temperature
    pairwise = torch.sigmoid(r.unsqueeze(2) - r.unsqueeze(1))  # [B, i, j]
    valid_j = mask.unsqueeze(1).expand_as(pairwise)
    rates = torch.where(valid_j, pairwise, 0.0).sum(dim=2) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.where(mask, rates, float("nan"))


def sppo_sample_win_rates(scores: Tensor, mask: Tensor) -> Tensor:
    """Online SPPO's win-rates: each sample's mean preference over the OTHER samples of its prompt.

    P(i ≻ j) = σ(s_i − s_j) from the reward model's scores `s` (float `[B, K]`; a Bradley–Terry model's
    preference). The K samples of a prompt are independent draws from the current policy, so the mean over the
    K − 1 others is an unbiased estimate of P(y_i ≻ π_t | x); counting y_i against itself would add a fixed ½.
    Returns float32 `[B, K]` in [0, 1]; NaN where mask is False or a prompt has no other valid sample.
    """
    _check_mask(mask)
    _check_grouped("scores", scores, mask)
    s = torch.where(mask, scores.float(), 0.0)
    pairwise = torch.sigmoid(s.unsqueeze(2) - s.unsqueeze(1))  # [B, i, j]
    others = mask.unsqueeze(1) & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    count = others.sum(dim=2)
    rates = torch.where(others, pairwise, 0.0).sum(dim=2) / count.clamp(min=1)
    return torch.where(mask & (count > 0), rates, float("nan"))


def sppo_loss(
    policy_logps: Tensor, ref_logps: Tensor, win_rates: Tensor, mask: Tensor, *, eta: float
) -> LossOutput:
    """SPPO (arXiv 2405.00675) squared loss, one term per response.

    Per valid response: (log π_θ(y|x) − log π_ref(y|x) − η (P̂ − ½))², with summed response log-probs,
    π_ref the previous iterate and P̂ its win-rate (see `sppo_win_rates`); the loss is the mean over valid
    responses (for K = 2 this is the pairwise ½[(Δ_w − ·)² + (Δ_l − ·)²] of the SPPO code).
    Components: `extra["log_ratio"]` (mean log π_θ − log π_ref), `extra["target"]` (mean η (P̂ − ½)).
    """
    _check_mask(mask)
    for name, t in (("policy_logps", policy_logps), ("ref_logps", ref_logps), ("win_rates", win_rates)):
        _check_grouped(name, t, mask)
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    log_ratio = torch.where(mask, policy_logps.float() - ref_logps.float(), 0.0)
    target = torch.where(mask, eta * (win_rates.float() - 0.5), 0.0)
    sq = torch.where(mask, (log_ratio - target) ** 2, 0.0)
    n_resp = mask.sum().clamp(min=1)
    loss = sq.sum() / n_resp
    checks = _finite_checks(win_rates, mask, "win_rates")
    return LossOutput(loss=loss, n_prompts=mask.any(dim=1).sum(), checks=checks,
                      extra={"log_ratio": log_ratio.sum() / n_resp, "target": target.sum() / n_resp})


# ------------------------------------------------------------------------------------------------ RRHF


def rrhf_loss(mean_logps: Tensor, nll: Tensor, ratings: Tensor, mask: Tensor, *,
              rank_weight: float = 1.0) -> LossOutput:
    """RRHF (arXiv 2304.05302): ranking hinge on mean log-probs plus SFT on the best response.

    Per prompt: rank = Σ over valid pairs with r_i < r_j of max(0, p_i − p_j), p = `mean_logps` (mean token
    log-prob); sft = mean `nll` over the top-rated responses (ties share the top). Loss = mean over prompts
    with a valid response of rank_weight × rank + sft (the paper's weight is 1). Components: `sft` and
    `extra["rank"]` (both means over prompts, rank before its weight).
    """
    _check_mask(mask)
    for name, t in (("mean_logps", mean_logps), ("nll", nll), ("ratings", ratings)):
        _check_grouped(name, t, mask)
    if not rank_weight >= 0:
        raise ValueError(f"rank_weight must be >= 0, got {rank_weight}")
    r, _, is_top, _, has_valid = _top_and_neg(ratings, mask)
    p = torch.where(mask, mean_logps.float(), 0.0)
    x = torch.where(mask, nll.float(), 0.0)
    # pair[b, i, j]: response i is rated strictly below response j.
    pair = mask.unsqueeze(2) & mask.unsqueeze(1) & (r.unsqueeze(2) < r.unsqueeze(1))
    rank = torch.where(pair, F.relu(p.unsqueeze(2) - p.unsqueeze(1)), 0.0).sum(dim=(1, 2))
    sft = _masked_mean_rows(x, is_top)
    n_valid = has_valid.sum().clamp(min=1)
    rank_m = torch.where(has_valid, rank, 0.0).sum() / n_valid
    sft_m = torch.where(has_valid, sft, 0.0).sum() / n_valid
    loss = rank_weight * rank_m + sft_m
    return LossOutput(loss=loss, n_prompts=has_valid.sum(), sft=sft_m, extra={"rank": rank_m},
                      checks=_finite_checks(ratings, mask))


# ------------------------------------------------------------------------------------- reward modelling


def bradley_terry_loss(
    chosen_scores: Tensor,
    rejected_scores: Tensor,
    *,
    center_coef: float = 0.0,
    score_reg: float = 0.0,
    weights: Tensor | None = None,
) -> LossOutput:
    """Bradley–Terry reward-model loss over pairs of scalar scores.

    loss = Σ w·(−log σ(s_c − s_r)) / Σ w                      (plain mean without `weights`)
         + center_coef · mean((s_c + s_r)²)                    (TRL RewardTrainer's center_rewards_coefficient)
         + score_reg · mean(s_c² + s_r²)                       (ChatGLM-RLHF's zero-mean Gaussian prior)

    `weights` (non-negative, one per pair) weight the preference term only; the two regularisers act on
    the scores themselves and stay unweighted means over pairs. Components: `chosen_reward`,
    `rejected_reward` (mean scores), `reward_accuracy` (share with s_c > s_r), `extra["bt"]`,
    `extra["center"]`, `extra["score_reg"]` (each term before its coefficient).
    """
    _check_paired(chosen_scores=chosen_scores, rejected_scores=rejected_scores)
    if center_coef < 0 or score_reg < 0:
        raise ValueError(f"center_coef and score_reg must be >= 0, got {center_coef} and {score_reg}")
    c = chosen_scores.float()
    r = rejected_scores.float()
    per_pair = -F.logsigmoid(c - r)
    if weights is None:
        bt = per_pair.mean()
        w_bad = torch.zeros((), device=c.device)
    else:
        if weights.shape != chosen_scores.shape:
            raise ValueError(
                f"weights has shape {tuple(weights.shape)}, scores have {tuple(chosen_scores.shape)}"
            )
        w = weights.float()
        w_sum = w.sum()
        bt = (w * per_pair).sum() / w_sum
        w_bad = ((w < 0).any() | ~(w_sum > 0)).float()
    center = ((c + r) ** 2).mean()
    reg = (c.pow(2) + r.pow(2)).mean()
    loss = bt + center_coef * center + score_reg * reg
    cd, rd = c.detach(), r.detach()
    message = "weights must be non-negative with a positive sum"
    checks = [(w_bad, message)] if w_bad.device.type != "cpu" else []
    if not checks and bool(w_bad):
        raise ValueError(message)
    return LossOutput(
        loss=loss,
        n_prompts=c.numel(),
        chosen_reward=cd.mean(),
        rejected_reward=rd.mean(),
        reward_accuracy=(cd > rd).float().mean(),
        extra={"bt": bt, "center": center, "score_reg": reg},
        checks=checks,
    )


def length_balanced_pairs(
    chosen_lengths: Sequence[int] | Tensor,
    rejected_lengths: Sequence[int] | Tensor,
    *,
    bucket_width: int = 20,
    seed: int = 0,
) -> list[int]:
    """Indices of the pairs kept by ChatGLM-RLHF's bucket-based length balancing (arXiv 2404.00934).

    A reward model learns "longer wins" when the data mostly pairs long winners with short losers. To
    remove that signal, pairs are bucketed by their length difference d = |len_c − len_r|, bucket
    index d // bucket_width. Within a bucket, the pairs where the longer response won and the pairs
    where the shorter one won are made equal in number: the majority side is downsampled at random
    (a `torch.Generator` seeded with `seed`, buckets visited in ascending order, so the result is
    deterministic). A bucket holding only one side is dropped entirely. Pairs of equal length carry no
    length signal and are always kept. Lengths may be in any unit (tokens, characters) as long as
    `bucket_width` uses the same one. Returns the kept indices in ascending order.
    """
    c = torch.as_tensor(chosen_lengths, dtype=torch.long).reshape(-1)
    r = torch.as_tensor(rejected_lengths, dtype=torch.long).reshape(-1)
    if c.shape != r.shape:
        raise ValueError(f"chosen_lengths has {c.numel()} entries but rejected_lengths has {r.numel()}")
    if bucket_width < 1:
        raise ValueError(f"bucket_width must be >= 1, got {bucket_width}")
    if (c < 0).any() or (r < 0).any():
        raise ValueError("lengths must be non-negative")
    diff = c - r
    kept: list[int] = torch.nonzero(diff == 0).flatten().tolist()
    bucket = diff.abs() // bucket_width
    gen = torch.Generator().manual_seed(seed)
    unequal = diff != 0
    for b in torch.unique(bucket[unequal]).tolist():  # torch.unique sorts: fixed visiting order
        in_bucket = unequal & (bucket == b)
        longer_won = torch.nonzero(in_bucket & (diff > 0)).flatten()
        shorter_won = torch.nonzero(in_bucket & (diff < 0)).flatten()
        n = min(longer_won.numel(), shorter_won.numel())
        for side in (longer_won, shorter_won):
            if side.numel() > n:
                side = side[torch.randperm(side.numel(), generator=gen)[:n]]
            kept.extend(side.tolist())
    return sorted(kept)
