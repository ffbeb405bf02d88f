"""The online baselines' reward model (rlhf, sppo_online): a sequence classifier with one score per (prompt, response),
trained by TRL's RewardTrainer with the Bradley–Terry loss on the preference pairs DPO uses, after ChatGLM-RLHF's
bucket-based length balancing (arXiv 2404.00934), with a zero-mean penalty on the scores in the same loss: TRL's
center_rewards_coefficient × mean((r_chosen + r_rejected)²) (`reward_args`).

A seeded share of prompts (never single pairs: a prompt's pairs share its text) is held out for pair accuracy, and
the length bias is measured three times: in the pairs as given, in the pairs kept by balancing, and in the trained
model's scores. Pairs are rendered in the base model's prompt format (training/data.py), as the policy sees them."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import torch

from alignment_pipeline.llm.prompt_format import Prompt, prompt_format
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.checkpointing import save_final_model
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup, samples_batches, special_prefix, tokenize_group
from alignment_pipeline.training.losses import length_balanced_pairs
from alignment_pipeline.training.objectives import preference_pairs
from alignment_pipeline.warehouse.db import Warehouse, insert_frame

log = logging.getLogger(__name__)

NAME = "reward_model"


class NotEnoughData(ValueError):
    """The samples hold too little to train a reward model on; the asset records it as not trained, with this
    reason, and the online baselines that need it as not trained too."""


# -- data ---------------------------------------------------------------------------------------------------------

def split_prompts(groups: Sequence[PromptGroup], heldout_share: float, seed: int
                  ) -> tuple[list[PromptGroup], list[PromptGroup]]:
    """(train, held out): groups ranked by a seeded hash of their prompt text, the first round(share × prompts)
    prompts held out (at least one when the share is positive and there are two prompts or more). Every group of
    a held-out prompt is held out, so no pair of a held-out prompt is trained on."""
    if not 0 <= heldout_share < 1:
        raise ValueError(f"heldout_share must lie in [0, 1), got {heldout_share}")
    prompts = sorted({(g.instruction, g.input) for g in groups},
                     key=lambda p: hashlib.sha256(f"{seed}\x00{p[0]}\x00{p[1]}".encode()).hexdigest())
    n = round(heldout_share * len(prompts))
    if heldout_share > 0 and n == 0 and len(prompts) >= 2:
        n = 1
    held = set(prompts[:n])
    train = [g for g in groups if (g.instruction, g.input) not in held]
    heldout = [g for g in groups if (g.instruction, g.input) in held]
    return train, heldout


@dataclass(frozen=True)
class PairTokens:
    """Tokenised preference pairs: full sequences (prompt + response + end of turn) and response lengths."""

    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    chosen_len: list[int]
    rejected_len: list[int]
    chosen_rating: list[float]
    rejected_rating: list[float]

    def __len__(self) -> int:
        return len(self.chosen_ids)

    def subset(self, keep: Sequence[int]) -> PairTokens:
        return PairTokens(*([getattr(self, f)[i] for i in keep] for f in
                            ("chosen_ids", "rejected_ids", "chosen_len", "rejected_len", "chosen_rating",
                             "rejected_rating")))


def tokenize_pairs(tokenizer, pairs: Sequence[PromptGroup], *, max_length: int, min_prompt_tokens: int = 16
                   ) -> PairTokens:
    """Each two-response group (chosen first) as two token sequences, rendered exactly as the trainer renders
    samples (the model's prompt format, its end-of-turn token after the response)."""
    prefix, fmt = special_prefix(tokenizer), prompt_format(tokenizer)
    out: dict[str, list] = {k: [] for k in PairTokens.__dataclass_fields__}
    for i, pair in enumerate(pairs):
        if len(pair.responses) != 2 or not pair.ratings[0] > pair.ratings[1]:
            raise ValueError(f"pair {pair.key!r} must hold two responses, the first rated strictly higher")
        t = tokenize_group(tokenizer, pair, i, max_length=max_length, min_prompt_tokens=min_prompt_tokens,
                           prefix=prefix, fmt=fmt)
        out["chosen_ids"].append(t.prompt_ids + t.response_ids[0])
        out["rejected_ids"].append(t.prompt_ids + t.response_ids[1])
        out["chosen_len"].append(len(t.response_ids[0]))
        out["rejected_len"].append(len(t.response_ids[1]))
        out["chosen_rating"].append(float(pair.ratings[0]))
        out["rejected_rating"].append(float(pair.ratings[1]))
    return PairTokens(**out)


def length_bias(chosen_len: Sequence[int], rejected_len: Sequence[int], chosen_score: Sequence[float],
                rejected_score: Sequence[float]) -> dict:
    """How much length decides the winner of a pair. `longer_wins_share`: among pairs of unequal length and
    unequal score, the share where the longer response scored higher (0.5: no length signal).
    `score_length_corr`: Pearson correlation between score and length over every response of the pairs.
    Scores are ratings for the data, the reward model's scores for the model. None where undefined."""
    if not len(chosen_len) == len(rejected_len) == len(chosen_score) == len(rejected_score):
        raise ValueError("length_bias needs one length and one score per response of every pair")
    decided = [(cl > rl) == (cs > rs) for cl, rl, cs, rs in zip(chosen_len, rejected_len, chosen_score,
                                                                 rejected_score, strict=True)
               if cl != rl and cs != rs]
    lengths = [float(x) for x in (*chosen_len, *rejected_len)]
    scores = [float(x) for x in (*chosen_score, *rejected_score)]
    return {"pairs": len(chosen_len), "decided_pairs": len(decided),
            "longer_wins_share": sum(decided) / len(decided) if decided else None,
            "score_length_corr": pearson(lengths, scores)}


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than two points or a constant side."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def scored_sample(n: int, cap: int | None, seed: int) -> list[int]:
    """Indices of the training pairs scored for train accuracy: all `n`, or a seeded sample of `cap` in order (drawn
    the way benchmark items are)."""
    from alignment_pipeline.evaluation.data import sample_ids

    return sample_ids("reward_model_train_accuracy", list(range(n)), cap, seed)


def balance(pairs: PairTokens, *, enabled: bool, bucket_width: int, seed: int) -> PairTokens:
    if not enabled:
        return pairs
    return pairs.subset(length_balanced_pairs(pairs.chosen_len, pairs.rejected_len, bucket_width=bucket_width,
                                              seed=seed))


# -- model --------------------------------------------------------------------------------------------------------

def load_reward_model(path: str | Path, device: torch.device | str = "cpu"):
    """(model, tokenizer) of a saved reward model, or of a causal LM given a fresh one-score head (seeded by the
    caller). The tokenizer's pad token (EOS where it has none) is the model's, so the score is read at the last
    token that is not padding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


@torch.no_grad()
def score_ids(model, sequences: Sequence[Sequence[int]], pad_id: int, *, batch_size: int = 8) -> list[float]:
    """The model's score of each token sequence (right padding; the head reads the last non-pad token)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, :len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        out.extend(logits[:, 0].float().cpu().tolist())
    model.train(was_training)
    return out


class RewardScorer:
    """Scores (prompt, response) pairs with a trained reward model, rendered as it was trained."""

    def __init__(self, path: str | Path, *, device: str = "auto", max_length: int = 1024, batch_size: int = 8):
        from alignment_pipeline.devices import resolve_device

        self.path = str(path)
        self.model, self.tokenizer = load_reward_model(path, resolve_device(device))
        self.max_length, self.batch_size = max_length, batch_size
        self.fmt, self.prefix = prompt_format(self.tokenizer), special_prefix(self.tokenizer)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        sequences = []
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            # An empty completion is still a response (the end-of-turn token alone), scored like any other.
            group = PromptGroup(prompt.instruction, prompt.input, [response], [0.0])
            t = tokenize_group(self.tokenizer, group, i, max_length=self.max_length, prefix=self.prefix,
                               fmt=self.fmt)
            sequences.append(t.prompt_ids + t.response_ids[0])
        return score_ids(self.model, sequences, self.tokenizer.pad_token_id, batch_size=self.batch_size)


def pair_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float | None:
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen) if chosen else None


# -- training -----------------------------------------------------------------------------------------------------

@dataclass
class RewardModelResult:
    path: Path  # the saved model directory (loads with AutoModelForSequenceClassification)
    steps: int
    metrics: dict
    mlflow_run_id: str | None
    samples_batches: list[str] = field(default_factory=list)
    registered_model: str | None = None  # "name/version" in the MLflow model registry

    def metadata(self) -> dict:
        return {"path": str(self.path), "steps": self.steps, "mlflow_run_id": self.mlflow_run_id,
                "registered_model": self.registered_model, "samples_batches": list(self.samples_batches),
                **{f"metric/{k}": v for k, v in self.metrics.items()}}


def train_reward_model(groups: Sequence[PromptGroup], *, config: TrainingConfig, home: HomeLayout,
                       base_model: str | None = None, out_dir: Path | None = None, run_name: str = NAME,
                       tags: dict | None = None, parent_run_id: str | None = None) -> RewardModelResult:
    """Pairs from `groups` (training.dpo_pairs), a seeded prompt-level hold-out, length balancing of the training
    pairs, TRL's RewardTrainer, then held-out accuracy and length bias; saved under `out_dir/model` (default
    `<home>/checkpoints/reward_model/model`) and tracked in MLflow."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardTrainer

    from alignment_pipeline import tracking
    from alignment_pipeline.training.runtime import resolve_runtime
    from alignment_pipeline.training.trainer import resolve_base_model

    rm = config.reward_model
    base_model = base_model or config.base_model
    out_dir = out_dir or home.checkpoints / run_name
    # Groups whose responses all tie give no pair: left out before the split, so held-out prompts have pairs.
    ranked = [g for g in groups if len(set(g.ratings)) > 1]
    train_groups, heldout_groups = split_prompts(ranked, rm.heldout_share, config.seed)
    train_pairs, heldout_pairs = (preference_pairs(train_groups, config.dpo_pairs),
                                  preference_pairs(heldout_groups, config.dpo_pairs))
    heldout_note = None
    if not train_pairs and heldout_pairs:
        # The hold-out took every prompt with a pair: a model trained on nothing is worth less than one that cannot
        # be judged, so it trains on all of them and says that no held-out accuracy exists.
        heldout_note = (f"the hold-out ({rm.heldout_share:.0%} of prompts) left no pair to train on: trained on all "
                        f"{len(heldout_pairs)} pairs, no held-out accuracy")
        log.warning("reward model: %s", heldout_note)
        train_groups, heldout_groups, train_pairs, heldout_pairs = ranked, [], heldout_pairs, []
    if not train_pairs:
        raise NotEnoughData(f"no preference pairs: none of the {len(groups)} prompt groups holds two differently "
                            "rated responses")
    runtime = resolve_runtime(config.device, config.precision)
    base_path = resolve_base_model(base_model, home)
    set_seed(config.seed)  # the score head is initialised at load
    model, tokenizer = load_reward_model(base_path, runtime.device)
    tokens = tokenize_pairs(tokenizer, train_pairs, max_length=config.max_length,
                            min_prompt_tokens=config.min_prompt_tokens)
    held = tokenize_pairs(tokenizer, heldout_pairs, max_length=config.max_length,
                          min_prompt_tokens=config.min_prompt_tokens)
    kept = balance(tokens, enabled=rm.length_balance, bucket_width=rm.length_bucket_width, seed=config.seed)
    if not len(kept):
        raise NotEnoughData(f"length balancing kept none of {len(tokens)} pairs: every length bucket holds only "
                         "longer-won or only shorter-won pairs; set training.reward_model.length_balance: false "
                         "or widen length_bucket_width")
    metrics: dict = {"train_prompts": len({(g.instruction, g.input) for g in train_groups}),
                     "heldout_prompts": len({(g.instruction, g.input) for g in heldout_groups}),
                     **({"heldout_note": heldout_note} if heldout_note else {})}
    metrics.update(_prefixed("data", length_bias(tokens.chosen_len, tokens.rejected_len, tokens.chosen_rating,
                                                 tokens.rejected_rating)))
    metrics.update(_prefixed("balanced", length_bias(kept.chosen_len, kept.rejected_len, kept.chosen_rating,
                                                     kept.rejected_rating)))

    work = out_dir / "trainer"
    args = reward_args(config, runtime, work)
    dataset = Dataset.from_dict({"chosen_ids": kept.chosen_ids, "rejected_ids": kept.rejected_ids})
    params = {"base_model": base_model, "base_model_path": base_path, "pairs": len(tokens), "pairs_kept": len(kept),
              "heldout_pairs": len(held), "device": str(runtime.device), "bf16": runtime.bf16,
              "seed": config.seed, "dpo_pairs": config.dpo_pairs, "max_length": config.max_length,
              **{f"reward_model.{k}": v for k, v in rm.model_dump().items()}}
    with tracking.stage_run(home, run_name, parent_run_id=parent_run_id, params=params,
                            tags={**(tags or {}), "checkpoint_kind": NAME}) as run:
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        train_loss = tracking.log_trainer_history(trainer.state.log_history)
        model = trainer.model
        pad = tokenizer.pad_token_id
        scored = kept.subset(scored_sample(len(kept), rm.train_accuracy_pairs, config.seed))
        train_c, train_r = score_ids(model, scored.chosen_ids, pad), score_ids(model, scored.rejected_ids, pad)
        metrics["train_accuracy"] = pair_accuracy(train_c, train_r)
        metrics["train_accuracy_pairs"] = len(scored)
        metrics.update(_prefixed("model_train", length_bias(scored.chosen_len, scored.rejected_len, train_c,
                                                            train_r)))
        if len(held):
            held_c, held_r = score_ids(model, held.chosen_ids, pad), score_ids(model, held.rejected_ids, pad)
            metrics["heldout_accuracy"] = pair_accuracy(held_c, held_r)
            metrics.update(_prefixed("model_heldout", length_bias(held.chosen_len, held.rejected_len, held_c,
                                                                  held_r)))
        else:
            metrics["heldout_accuracy"] = None
        metrics["heldout_pairs"] = len(held)  # what the accuracy rests on (training/checks.py warns below a bar)
        metrics["steps"] = trainer.state.global_step
        metrics["train_loss"] = train_loss
        final = save_final_model(model, tokenizer, out_dir)
        shutil.rmtree(work, ignore_errors=True)
        tracking.log_metrics({f"final/{k}": float(v) for k, v in metrics.items()
                              if isinstance(v, (int, float)) and v is not None})
        tracking.log_text(json.dumps(metrics, indent=2), "reward_model_report.json")
        run_id = run.info.run_id
        registered = _register(final, run_id, run_name, config, base_model=base_model, home=home, metrics=metrics,
                               pairs=len(kept), batches=samples_batches(list(groups)))
    log.info("reward model: %d pairs (%d kept by length balancing), held-out accuracy %s", len(tokens), len(kept),
             metrics["heldout_accuracy"])
    return RewardModelResult(final, int(trainer.state.global_step), metrics, run_id,
                             samples_batches(list(groups)), registered)


def reward_args(config: TrainingConfig, runtime, work: Path):
    """TRL's RewardConfig for the reward model: its RewardTrainer adds center_coef × mean((r_c + r_r)²) to the
    Bradley–Terry loss (`compute_loss`), None turning it off."""
    from trl import RewardConfig

    rm = config.reward_model
    return RewardConfig(
        output_dir=str(work), per_device_train_batch_size=rm.per_device_batch, num_train_epochs=rm.epochs,
        max_steps=rm.max_steps or -1, learning_rate=rm.learning_rate, lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, seed=config.seed,
        data_seed=config.seed, center_rewards_coefficient=rm.center_coef or None, max_length=config.max_length,
        gradient_accumulation_steps=config.grad_accum, bf16=runtime.bf16, use_cpu=runtime.device.type == "cpu",
        gradient_checkpointing=config.gradient_checkpointing,  # TRL's default is on; the training config decides
        logging_steps=config.log_every,
        save_strategy="no", report_to="none", disable_tqdm=True, remove_unused_columns=False,
    )


def _register(final: Path, run_id: str, run_name: str, config: TrainingConfig, *, base_model: str,
              home: HomeLayout, metrics: dict, pairs: int, batches: list[str]) -> str | None:
    """Register the reward model beside the policies (training.register_model), described by its data, steps and
    held-out accuracy; on the active run."""
    from alignment_pipeline import tracking
    from alignment_pipeline.training.report import registered_model_name

    if not config.register_model:
        return None
    accuracy = metrics.get("heldout_accuracy")
    judged = (f"held-out pair accuracy {accuracy:.2f} on {metrics['heldout_pairs']} pairs" if accuracy is not None
              else "no held-out pairs to judge it on")
    base = tracking.model_reference(base_model, home)
    description = (f"{run_name}: Bradley–Terry reward model on {pairs} length-balanced preference pairs of samples "
                   f"batches {', '.join(batches) or '(none)'}; {metrics['steps']} optimizer steps from {base}; "
                   f"{judged}. The online baselines (rlhf, sppo_online) optimise against it.")
    return tracking.log_and_register(final, run_id=run_id, name=registered_model_name(run_name),
                                     tags={"objective": "reward_model", "base_model": base,
                                           "samples_batches": ",".join(batches), "steps": str(metrics["steps"])},
                                     description=description)


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in values.items()}


# -- warehouse ----------------------------------------------------------------------------------------------------

def record_reward_model(warehouse: Warehouse, result: RewardModelResult, *, base_model: str, name: str = NAME) -> None:
    """Insert or replace the row of reward model `name` (retraining replaces it)."""
    clean = {k: (v if not (isinstance(v, float) and not math.isfinite(v)) else None) for k, v in result.metrics.items()}
    frame = pl.DataFrame({
        "name": [name], "path": [str(result.path)], "base_model": [base_model],
        "samples_batches": [list(result.samples_batches)], "steps": [int(result.steps)],
        "mlflow_run_id": [result.mlflow_run_id], "metrics": [json.dumps(clean, default=str)],
        "created_at": [datetime.now(timezone.utc).replace(tzinfo=None)],
    }, schema_overrides={"samples_batches": pl.List(pl.String), "mlflow_run_id": pl.String})
    with warehouse.transaction() as con:
        con.execute("DELETE FROM reward_models WHERE name = ?", [name])
        insert_frame(con, "reward_models", frame)


def forget_reward_model(warehouse: Warehouse, name: str = NAME) -> None:
    """Drop the row of reward model `name`: a model trained on earlier samples must not stand in for one the current
    samples could not train."""
    with warehouse.transaction() as con:
        con.execute("DELETE FROM reward_models WHERE name = ?", [name])


def reward_model_row(warehouse: Warehouse, name: str = NAME) -> dict | None:
    frame = warehouse.query("SELECT * FROM reward_models WHERE name = ?", [name])
    return frame.to_dicts()[0] if frame.height else None
