"""The training objectives over packed batches, and the group shapes each one trains on."""

from __future__ import annotations

from typing import Literal

import torch

from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup, TokenizedGroup
from alignment_pipeline.training.forward import PackedBatch, ResponseLogps, response_logps
from alignment_pipeline.training.hindsight import coh_training_groups
from alignment_pipeline.training.losses import (
    LossOutput,
    coh_loss,
    dpo_loss,
    rrhf_loss,
    sequence_nll,
    sft_loss,
    sppo_loss,
    sppo_win_rates,
    stable_alignment_loss,
)

Objective = Literal["stable_alignment", "sft", "dpo", "sppo", "rrhf", "coh"]
OBJECTIVES: tuple[str, ...] = ("stable_alignment", "sft", "dpo", "sppo", "rrhf", "coh")
NEEDS_REFERENCE = ("dpo", "sppo")


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


def best_response_groups(groups: list[PromptGroup]) -> list[PromptGroup]:
    """The SFT baseline's data: each group reduced to its best-rated response."""
    out = []
    for g in groups:
        i = g.best_index()
        out.append(PromptGroup(g.instruction, g.input, [g.responses[i]], [g.ratings[i]], g.key, g.batches))
    return out


def preference_pairs(groups: list[PromptGroup], mode: str = "best_vs_rest") -> list[PromptGroup]:
    """DPO pairs, each a two-response group (chosen first, rated strictly higher than the rejected one).
    `best_vs_rest`: the best response against every strictly lower one; `best_vs_worst`: one pair per prompt.
    Groups whose responses all tie give no pair."""
    if mode not in ("best_vs_rest", "best_vs_worst"):
        raise ValueError(f"unknown pairing {mode!r}; choose best_vs_rest or best_vs_worst")
    pairs = []
    for g in groups:
        best = g.best_index()
        lower = [i for i in range(len(g.ratings)) if g.ratings[i] < g.ratings[best]]
        if mode == "best_vs_worst" and lower:
            lower = [min(lower, key=lambda i: (g.ratings[i], i))]
        for i in lower:
            pairs.append(PromptGroup(g.instruction, g.input, [g.responses[best], g.responses[i]],
                                     [g.ratings[best], g.ratings[i]], f"{g.key}:{best}>{i}", g.batches))
    return pairs


def training_groups(groups: list[PromptGroup], objective: str, config: TrainingConfig) -> list[PromptGroup]:
    """What `objective` trains on: DPO turns groups into preference pairs, Chain-of-Hindsight into feedback chains
    and its pretraining groups (training/hindsight.py); the others take them as given (SFT learns every response
    it is given: pass `best_response_groups(...)` for the SFT baseline)."""
    check_objective(objective)
    if objective == "dpo":
        return preference_pairs(groups, config.dpo_pairs)
    if objective == "coh":
        return coh_training_groups(groups, preference_pairs(groups, "best_vs_rest"), config)
    return groups


def max_responses(objective: str, config: TrainingConfig) -> int | None:
    """Responses kept per group: the contrastive loss compares `num_responses` (best + a seeded sample), as the
    paper did; SPPO keeps all, so its win-rates match the samples_sppo view. RRHF keeps all too: its ranking
    loss runs over every pair of a query's ranked candidates, as its paper trains it, and the prompt is run once
    for all of them, so a sample would drop pairs to save little. CoH segments hold one response each."""
    return {"stable_alignment": config.num_responses, "dpo": 2}.get(objective)


def batch_ratings(groups: list[TokenizedGroup], k: int) -> torch.Tensor:
    out = torch.zeros(len(groups), k)
    for row, g in enumerate(groups):
        out[row, :len(g.ratings)] = torch.tensor(g.ratings)
    return out


def objective_loss(objective: str, model, batch: PackedBatch, ratings: torch.Tensor,
                   reference: torch.Tensor | None, config: TrainingConfig) -> tuple[LossOutput, ResponseLogps]:
    """The loss of one packed batch. `ratings` [B, K] on the batch's device; `reference` [B, K] summed
    reference log-probs (DPO, SPPO). Chain-of-Hindsight is SFT on its segments' responses (the feedback sits in
    their prompts, so it is never a target) plus its λ-weighted pretraining term; its groups carry their role,
    not a rating, in `ratings` (training/hindsight.py)."""
    lp = response_logps(model, batch, chunk_size=config.logprob_chunk_size)
    mask = lp.response_mask
    if objective == "stable_alignment":
        nll, _, _ = sequence_nll(lp.token_logps, lp.token_mask)
        out = stable_alignment_loss(nll, ratings, mask, margin=config.margin, rating_scale=config.rating_scale,
                                    ratio=config.ratio, aggregate=config.aggregate)
    elif objective == "sft":
        nll, _, _ = sequence_nll(lp.token_logps, lp.token_mask)
        out = sft_loss(nll, mask)
    elif objective == "coh":
        nll, _, _ = sequence_nll(lp.token_logps, lp.token_mask)
        out = coh_loss(nll, ratings, mask, pretrain_weight=config.coh_pretrain_weight)
    elif objective == "dpo":
        if batch.max_responses != 2 or set(batch.group_sizes) != {2}:  # host-side: no device sync
            raise ValueError("DPO batches must hold exactly two responses per group (chosen, rejected)")
        policy = lp.logp_sum
        out = dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
                       beta=config.dpo_beta, label_smoothing=config.dpo_label_smoothing)
    elif objective == "sppo":
        win_rates = sppo_win_rates(ratings, mask, temperature=config.sppo_rating_temperature)
        out = sppo_loss(lp.logp_sum, reference, win_rates, mask, eta=config.sppo_eta)
    elif objective == "rrhf":
        nll, _, logp_mean = sequence_nll(lp.token_logps, lp.token_mask)
        out = rrhf_loss(logp_mean, nll, ratings, mask, rank_weight=config.rrhf_rank_weight)
    else:
        check_objective(objective)
        raise AssertionError("unreachable")
    return out, lp
