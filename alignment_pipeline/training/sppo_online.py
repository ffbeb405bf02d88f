"""SPPO, online (Wu et al., arXiv 2405.00675, Algorithm 1): each iteration t samples K responses per prompt from the
current policy π_t, estimates each one's win-rate against π_t with a preference model, and moves the policy toward
log π(y|x) − log π_t(y|x) = η (P̂(y ≻ π_t | x) − ½) with the squared loss (losses.sppo_loss), π_t being the
policy as the iteration started.

The paper's preference model is PairRM; here it is the trained reward model (training/reward_model.py), a
Bradley–Terry model, so P(y_i ≻ y_j) = σ(r_i − r_j) and P̂ is the mean over the prompt's other samples
(losses.sppo_sample_win_rates). The paper gives each of its three iterations fresh prompts (rlhf.sppo_fresh_prompts)
and trains each from the previous iterate with a fresh optimizer (lr 5e-7, training.sppo_learning_rate).

Sampling follows the RLHF baseline (training/rlhf.py) and its settings (the rlhf section): the sandbox's distinct
prompts, rendered and tokenised as the contrastive trainer renders them and cut from the left to leave
rlhf.max_completion_length tokens, completions sampled at rlhf.temperature and ended at the format's end-of-turn
token. Log-probs are the contrastive trainer's (training/forward.py): one packed row per prompt, its K samples
sharing the prompt. The reference log-probs of an iteration's samples are computed once, before its first update.

Optimizer steps: training.budget_steps (else training.max_steps) in all when set, split evenly over the iterations
(fewer iterations when the budget is smaller than rlhf.sppo_iterations); otherwise training.epochs passes over each
iteration's samples, rlhf.prompts_per_step prompts (each with its K samples) per step.

The `sppo` checkpoint is the offline variant: one iteration on the society's rated responses, the ratings playing
the preference model (training/objectives.py)."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from alignment_pipeline.llm.prompt_format import Prompt, prompt_format
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.checkpointing import save_final_model
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup, TokenizedGroup, samples_batches, special_prefix
from alignment_pipeline.training.forward import pack_groups, response_logps
from alignment_pipeline.training.losses import sppo_loss, sppo_sample_win_rates
from alignment_pipeline.training.rlhf import RESULT_FILE, recorded_reward_model, rlhf_prompts
from alignment_pipeline.training.trainer import NonFiniteLossError, TrainResult

log = logging.getLogger(__name__)

OBJECTIVE = "sppo_online"
LR_OBJECTIVE = "sppo"  # the SPPO recipe's learning rate, shared with the offline variant


# -- plan ---------------------------------------------------------------------------------------------------------

def iteration_prompts(prompts: Sequence[Prompt], iteration: int, iterations: int, *, fresh: bool) -> list[Prompt]:
    """The prompts iteration `iteration` (0-based) samples: every `iterations`-th one from its own offset when
    `fresh` and there are enough for each iteration to get one, else all of them."""
    if not fresh or len(prompts) < iterations:
        return list(prompts)
    return list(prompts[iteration::iterations])


def steps_per_iteration(max_steps: int | None, epochs: int, iterations: int, prompt_counts: Sequence[int],
                        prompts_per_step: int) -> list[int]:
    """Optimizer steps of each iteration. With `max_steps`, they add up to it: an even split, the remainder to the
    first iterations, and no iteration without a step (so at most `max_steps` iterations). Without, `epochs`
    passes over each iteration's prompts, `prompts_per_step` per step."""
    if max_steps is None:
        return [epochs * math.ceil(n / prompts_per_step) for n in prompt_counts[:iterations]]
    n = min(iterations, max_steps)
    return [max_steps // n + (1 if i < max_steps % n else 0) for i in range(n)]


def trained_shares(shares: Sequence[Sequence[Prompt]], plan: Sequence[int], prompts_per_step: int
                   ) -> list[list[Prompt]]:
    """Each iteration's prompts cut to what its steps train on (steps × prompts per step): sampling is the online
    method's largest cost, and a prompt sampled but never trained on buys nothing."""
    return [list(share[:steps * prompts_per_step]) for share, steps in zip(shares, plan, strict=False)]


# -- sampling -----------------------------------------------------------------------------------------------------

def prompt_token_ids(tokenizer, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[list[int]]:
    """Each prompt as the contrastive trainer tokenises it (the BOS a plain-text prompt gets, the rendered prompt
    without added special tokens), cut from the left to `max_prompt_tokens`."""
    fmt = prompt_format(tokenizer)
    prefix = [] if fmt.chat else special_prefix(tokenizer)
    keep = max(max_prompt_tokens - len(prefix), 1)
    return [prefix + tokenizer(fmt.render(p), add_special_tokens=False)["input_ids"][-keep:] for p in prompts]


def stop_token_ids(tokenizer) -> list[int]:
    """Where a completion ends: the format's end-of-turn token, and EOS."""
    ids = list(prompt_format(tokenizer).end_of_turn_ids(tokenizer))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def cut_at_stop(ids: Sequence[int], stop: Sequence[int]) -> list[int]:
    """A sampled continuation up to and including its first stop token (all of it when it ran out of length)."""
    out = []
    for t in ids:
        out.append(int(t))
        if t in stop:
            break
    return out


@torch.no_grad()
def sample_completions(model, prompt_ids: Sequence[Sequence[int]], *, k: int, max_new_tokens: int,
                       temperature: float, stop: Sequence[int], pad_id: int) -> list[list[list[int]]]:
    """`k` completions per prompt, sampled from `model` as it is now (plain sampling at `temperature`: no top-k or
    top-p cut), each cut at its first stop token. Prompts are left-padded into one batch."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, p in enumerate(prompt_ids):
        ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p):] = 1
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                         temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                         num_return_sequences=k, eos_token_id=list(stop), pad_token_id=pad_id, use_cache=True)
    model.train(was_training)
    rows = [cut_at_stop(r[width:].tolist(), stop) for r in out]
    return [rows[i * k:(i + 1) * k] for i in range(len(prompt_ids))]


@dataclass
class IterationData:
    """One iteration's samples: per prompt its token ids and K completions (as packable groups), the reward
    model's scores [P, K], the win-rates from them [P, K] and the reference log-probs [P, K]."""

    groups: list[TokenizedGroup]
    scores: torch.Tensor
    win_rates: torch.Tensor
    reference: torch.Tensor | None = None


def collect(model, tokenizer, scorer, prompts: Sequence[Prompt], *, config: TrainingConfig,
            max_prompt_tokens: int) -> IterationData:
    """Sample `rlhf.num_generations` completions of each prompt from the current policy, `rlhf.prompts_per_step`
    prompts per generate call, and score them with the reward model."""
    rl = config.rlhf
    stop, pad = stop_token_ids(tokenizer), tokenizer.pad_token_id
    ids = prompt_token_ids(tokenizer, prompts, max_prompt_tokens)
    completions: list[list[list[int]]] = []
    for start in range(0, len(ids), rl.prompts_per_step):
        completions += sample_completions(model, ids[start:start + rl.prompts_per_step], k=rl.num_generations,
                                          max_new_tokens=rl.max_completion_length, temperature=rl.temperature,
                                          stop=stop, pad_id=pad)
    texts = [tokenizer.decode([t for t in c if t not in stop], skip_special_tokens=True)
             for per_prompt in completions for c in per_prompt]
    flat_prompts = [p for p in prompts for _ in range(rl.num_generations)]
    scores = torch.tensor(scorer.score(flat_prompts, texts), dtype=torch.float32).view(len(prompts), -1)
    mask = torch.ones_like(scores, dtype=torch.bool)
    groups = [TokenizedGroup(index=i, prompt_ids=p, response_ids=c, ratings=[0.0] * len(c))
              for i, (p, c) in enumerate(zip(ids, completions, strict=True))]
    return IterationData(groups, scores, sppo_sample_win_rates(scores, mask))


# -- optimisation -------------------------------------------------------------------------------------------------

def sample_logps(model, groups: Sequence[TokenizedGroup], *, pad_id: int, chunk_size: int, autocast) -> torch.Tensor:
    """Summed log-probs [len(groups), K] of every completion, with gradients (the policy's)."""
    device = next(model.parameters()).device
    batch = pack_groups(list(groups), pad_id).to(device)
    with autocast():
        return response_logps(model, batch, chunk_size=chunk_size).logp_sum


@torch.no_grad()
def reference_logps(model, data: IterationData, *, pad_id: int, chunk_size: int, autocast,
                    batch_size: int) -> torch.Tensor:
    """The iteration's reference: the policy's log-probs of its samples before the iteration's first update."""
    was_training = model.training
    model.eval()
    rows = [sample_logps(model, data.groups[s:s + batch_size], pad_id=pad_id, chunk_size=chunk_size,
                         autocast=autocast).float().cpu() for s in range(0, len(data.groups), batch_size)]
    model.train(was_training)
    return torch.cat(rows)


def batch_order(n: int, per_step: int, steps: int, seed: int) -> list[list[int]]:
    """`steps` batches of prompt indices: seeded shuffled passes over the `n` prompts, `per_step` at a time."""
    rng, out = random.Random(seed), []
    while len(out) < steps:
        order = list(range(n))
        rng.shuffle(order)
        out += [order[s:s + per_step] for s in range(0, n, per_step)]
    return out[:steps]


def run_iteration(model, data: IterationData, *, steps: int, iteration: int, first_step: int, config: TrainingConfig,
                  runtime, pad_id: int) -> list[dict]:
    """`steps` optimizer steps of the SPPO loss on the iteration's samples, from a fresh AdamW and schedule (each
    SPPO iteration is its own fine-tuning run); each step's record, also logged to MLflow."""
    from transformers import get_scheduler

    from alignment_pipeline import tracking

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate_for(LR_OBJECTIVE), weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * steps),
                              num_training_steps=steps)
    records = []
    for n, idx in enumerate(batch_order(len(data.groups), config.rlhf.prompts_per_step, steps,
                                        config.seed * 1_000_003 + iteration), start=1):
        policy = sample_logps(model, [data.groups[i] for i in idx], pad_id=pad_id,
                              chunk_size=config.logprob_chunk_size, autocast=runtime.autocast)
        dev = policy.device
        mask = torch.ones_like(policy, dtype=torch.bool)
        out = sppo_loss(policy, data.reference[idx].to(dev), data.win_rates[idx].to(dev), mask, eta=config.sppo_eta)
        step = first_step + n
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(f"{OBJECTIVE}: non-finite loss at step {step} (iteration {iteration + 1})")
        out.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"train/loss": out.loss.item(), "train/log_ratio": out.extra["log_ratio"],
                  "train/target": out.extra["target"], "train/lr": scheduler.get_last_lr()[0],
                  "train/grad_norm": grad_norm, "sppo/iteration": iteration + 1}
        tracking.log_metrics(record, step=step)
        records.append({"step": step, **record})
    return records


def iteration_metrics(data: IterationData) -> dict:
    """What the reward model made of an iteration's samples (the win-rates' mean is ½ by construction)."""
    lengths = [len(c) for g in data.groups for c in g.response_ids]
    return {"sppo/reward_mean": data.scores.mean().item(), "sppo/reward_std": data.scores.std().item(),
            "sppo/win_rate_min": data.win_rates.min().item(), "sppo/win_rate_max": data.win_rates.max().item(),
            "sppo/completion_length_mean": sum(lengths) / len(lengths)}


# -- the checkpoint -----------------------------------------------------------------------------------------------

def _check_settings(config: TrainingConfig, runtime, prompts: list[Prompt], reward_model_path: str | Path) -> int:
    """The prompt token budget; refuses what online SPPO cannot run."""
    rl = config.rlhf
    if not prompts:
        raise ValueError("online SPPO needs prompts: the preference sample types hold no groups")
    if not Path(reward_model_path, "config.json").is_file():
        raise ValueError(f"no reward model at {reward_model_path}: train the reward_model asset first")
    if runtime.world_size > 1:
        raise ValueError("online SPPO runs in one process; set training.nproc_per_node: 1 for it")
    if config.lora:
        raise ValueError("online SPPO trains every weight; set training.lora: false for it")
    max_prompt_tokens = config.max_length - rl.max_completion_length
    if max_prompt_tokens < config.min_prompt_tokens:
        raise ValueError(f"training.max_length {config.max_length} leaves {max_prompt_tokens} prompt tokens after "
                         f"rlhf.max_completion_length {rl.max_completion_length}; at least "
                         f"{config.min_prompt_tokens} (training.min_prompt_tokens) are needed")
    return max_prompt_tokens


def train_sppo_online(groups: Sequence[PromptGroup], *, reward_model_path: str | Path, base_model: str,
                      config: TrainingConfig, home: HomeLayout, out_dir: Path, run_name: str = OBJECTIVE,
                      parent_run_id: str | None = None, tags: dict | None = None) -> TrainResult:
    """Online SPPO from `base_model` on the groups' prompts, preferences from the reward model at
    `reward_model_path`; the final policy is saved under `out_dir/model`, tracked in MLflow (and registered when
    training.register_model)."""
    from transformers import AutoTokenizer, set_seed

    from alignment_pipeline import tracking
    from alignment_pipeline.training.report import plot_loss_curve
    from alignment_pipeline.training.reward_model import RewardScorer
    from alignment_pipeline.training.runtime import resolve_runtime
    from alignment_pipeline.training.trainer import load_model, resolve_base_model

    rl = config.rlhf
    prompts = rlhf_prompts(groups)
    runtime = resolve_runtime(config.device, config.precision)
    max_prompt_tokens = _check_settings(config, runtime, prompts, reward_model_path)
    shares = [iteration_prompts(prompts, t, rl.sppo_iterations, fresh=rl.sppo_fresh_prompts)
              for t in range(rl.sppo_iterations)]
    # The step budget every checkpoint shares (training.budget_steps), else the cap, else the epochs.
    plan = steps_per_iteration(config.budget_steps or config.max_steps, config.epochs, rl.sppo_iterations,
                               [len(s) for s in shares], rl.prompts_per_step)
    if config.budget_steps or config.max_steps:
        shares = trained_shares(shares, plan, rl.prompts_per_step)
    base_path = resolve_base_model(base_model, home)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_model(base_path, config, runtime)
    model.train()
    scorer = RewardScorer(reward_model_path, device=str(runtime.device), max_length=config.max_length,
                          batch_size=rl.reward_batch)
    params = {"objective": OBJECTIVE, "base_model": tracking.model_reference(base_model, home),
              "base_model_path": base_path, "reward_model_path": str(reward_model_path), "n_prompts": len(prompts),
              "device": str(runtime.device), "bf16": runtime.bf16, "seed": config.seed,
              "max_steps": config.max_steps, "budget_steps": config.budget_steps, "epochs": config.epochs, "max_length": config.max_length,
              "sppo_eta": config.sppo_eta, "peak_learning_rate": config.learning_rate_for(LR_OBJECTIVE),
              "steps_per_iteration": ",".join(map(str, plan)),
              **{f"rlhf.{k}": v for k, v in rl.model_dump().items()}}
    with tracking.stage_run(home, run_name, parent_run_id=parent_run_id, params=params,
                            tags={**(tags or {}), "objective": OBJECTIVE}) as run:
        history, per_iteration = [], []
        for t, steps in enumerate(plan):
            data = collect(model, tokenizer, scorer, shares[t], config=config, max_prompt_tokens=max_prompt_tokens)
            data.reference = reference_logps(model, data, pad_id=tokenizer.pad_token_id,
                                             chunk_size=config.logprob_chunk_size, autocast=runtime.autocast,
                                             batch_size=rl.prompts_per_step)
            summary = iteration_metrics(data)
            tracking.log_metrics(summary, step=len(history))
            per_iteration.append(summary)
            history += run_iteration(model, data, steps=steps, iteration=t, first_step=len(history), config=config,
                                     runtime=runtime, pad_id=tokenizer.pad_token_id)
            log.info("sppo_online: iteration %d/%d, %d prompts × %d samples, reward %.3f, %d steps", t + 1, len(plan),
                     len(shares[t]), rl.num_generations, summary["sppo/reward_mean"], steps)
        metrics = _final_metrics(history, per_iteration, prompts=len(prompts), k=rl.num_generations)
        final = save_final_model(model, tokenizer, out_dir)
        png = plot_loss_curve([{"step": e["step"], "train/loss": e["train/loss"]} for e in history],
                              out_dir / "loss_curve.png", title=f"{run_name} (online SPPO)")
        tracking.log_metrics({f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        tracking.log_artifact(png)
        run_id = run.info.run_id
        registered = _register(final, run_id, run_name, config, groups=groups, prompts=len(prompts),
                               steps=len(history), base_model=base_model, reward_model_path=reward_model_path,
                               home=home)
    result = TrainResult(checkpoint_path=final, mlflow_run_id=run_id, metrics=metrics, loss_curve_png=png,
                         steps=len(history), registered_model=registered,
                         samples_batches=samples_batches(list(groups)))
    (out_dir / RESULT_FILE).write_text(json.dumps(result.metadata(), indent=2, default=str))
    return result


def _final_metrics(history: list[dict], per_iteration: list[dict], *, prompts: int, k: int) -> dict:
    losses = [e["train/loss"] for e in history]
    return {"steps": len(history), "iterations": len(per_iteration), "prompts": prompts, "samples_per_prompt": k,
            "reward_mean_first": per_iteration[0]["sppo/reward_mean"] if per_iteration else None,
            "reward_mean_last": per_iteration[-1]["sppo/reward_mean"] if per_iteration else None,
            "win_rate_min": min((s["sppo/win_rate_min"] for s in per_iteration), default=None),
            "win_rate_max": max((s["sppo/win_rate_max"] for s in per_iteration), default=None),
            "completion_length_last": per_iteration[-1]["sppo/completion_length_mean"] if per_iteration else None,
            "loss": losses[-1] if losses else None,
            "train_loss": sum(losses) / len(losses) if losses else None}


def _register(final: Path, run_id: str, run_name: str, config: TrainingConfig, *, groups: Sequence[PromptGroup],
              prompts: int, steps: int, base_model: str, reward_model_path: str | Path, home: HomeLayout) -> str | None:
    """Register the policy beside the others (training.register_model), on the active run."""
    from alignment_pipeline import tracking
    from alignment_pipeline.training.report import model_description, registered_model_name

    if not config.register_model:
        return None
    base, batches = tracking.model_reference(base_model, home), samples_batches(list(groups))
    return tracking.log_and_register(
        final, run_id=run_id, name=registered_model_name(run_name),
        tags={"objective": OBJECTIVE, "base_model": base, "samples_batches": ",".join(batches),
              "reward_model": tracking.model_reference(reward_model_path, home), "steps": str(steps)},
        description=model_description(run_name, OBJECTIVE, groups=prompts, batches=batches, steps=steps,
                                      base_model=base))


def train_sppo_online_stage(warehouse, groups: Sequence[PromptGroup], *, base_model: str, config: TrainingConfig,
                            home: HomeLayout, out_dir: Path, run_name: str = OBJECTIVE,
                            parent_run_id: str | None = None, tags: dict | None = None) -> TrainResult:
    """`train_sppo_online` against the reward model recorded in the warehouse (the reward_model asset)."""
    row = recorded_reward_model(warehouse, OBJECTIVE)
    return train_sppo_online(groups, reward_model_path=row["path"], base_model=base_model, config=config,
                             home=home, out_dir=out_dir, run_name=run_name, parent_run_id=parent_run_id,
                             tags={**(tags or {}), "reward_model_run": row["mlflow_run_id"] or ""})
