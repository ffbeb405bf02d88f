"""How well a model's likelihoods order responses the way their ratings do (a held-out check of training)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from alignment_pipeline.training.data import PromptGroup, tokenize_groups
from alignment_pipeline.training.forward import pack_groups, response_logps
from alignment_pipeline.training.losses import sequence_nll


@dataclass(frozen=True)
class RankingScore:
    accuracy: float  # share of rated pairs (r_i > r_j) where the model gives i the lower length-normalised NLL
    pairs: int

    def metadata(self) -> dict:
        return {"ranking_accuracy": self.accuracy, "ranked_pairs": self.pairs}


@torch.no_grad()
def ranking_accuracy(model, tokenizer, groups: list[PromptGroup], *, max_length: int = 256,
                     batch_size: int = 16, device: str | torch.device | None = None) -> RankingScore:
    """Pairwise agreement between ratings and the model's per-token NLL over every strictly ordered pair of
    responses of each group (an NLL tie counts half)."""
    device = torch.device(device) if device else next(model.parameters()).device
    tokenized = tokenize_groups(tokenizer, groups, max_length=max_length)
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    agree, pairs = 0.0, 0
    try:
        for start in range(0, len(tokenized), batch_size):
            chunk = tokenized[start:start + batch_size]
            lp = response_logps(model, pack_groups(chunk, pad_id).to(device))
            nll, _, _ = sequence_nll(lp.token_logps, lp.token_mask)
            for row, g in enumerate(chunk):
                for i, ri in enumerate(g.ratings):
                    for j, rj in enumerate(g.ratings):
                        if ri > rj:
                            pairs += 1
                            a, b = float(nll[row, i]), float(nll[row, j])
                            agree += 1.0 if a < b else 0.5 if a == b else 0.0
    finally:
        model.train(was_training)
    return RankingScore(accuracy=agree / pairs if pairs else float("nan"), pairs=pairs)


def ranking_accuracy_of(model_path: str | Path, groups: list[PromptGroup], **kwargs) -> RankingScore:
    """`ranking_accuracy` of a saved checkpoint directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32, attn_implementation="sdpa")
    return ranking_accuracy(model, tokenizer, groups, **kwargs)
