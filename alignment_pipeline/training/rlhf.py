"""The RLHF baseline of the paper's table: policy optimisation against the reward model (training/reward_model.py)
with TRL's RLOOTrainer.

The paper's row is TRLX's PPO with a reward model. TRL 1.16 keeps no PPO trainer in its main namespace; of its
maintained online trainers RLOO is the one closest to that recipe: the KL penalty to the reference model is
subtracted from the reward, as in TRLX's PPO (GRPO instead adds it to the loss, and defaults it to 0), the update is
PPO's clipped surrogate, and the leave-one-out mean of the other completions of a prompt replaces PPO's learned value
head as the baseline (Ahmadian et al., arXiv 2402.14740, show it matching PPO on RLHF). Like PPO (TRLX's ppo_epochs)
it makes several passes over each batch of completions (rlhf.num_iterations, TRL's μ): on the first the probability
ratio is exactly 1 and the clip cannot act; from the second it does, and the share of completions it clipped is
recorded (TRL's clip_ratio/region_mean).

Prompts are the sandbox's: the distinct (instruction, input) of the preference groups, rendered and tokenised
exactly as the contrastive trainer renders them; the reward is the reward model's score of (prompt, completion),
rendered as the reward model was trained."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from alignment_pipeline.llm.prompt_format import Prompt, prompt_format
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.checkpointing import save_final_model
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup, samples_batches, special_prefix
from alignment_pipeline.training.forward import model_attn_implementation
from alignment_pipeline.training.trainer import TrainResult

log = logging.getLogger(__name__)

OBJECTIVE = "rlhf"
RESULT_FILE = "result.json"


def rlhf_prompts(groups: Sequence[PromptGroup]) -> list[Prompt]:
    """The distinct prompts of the groups, in first-seen order."""
    seen: dict[tuple[str, str], Prompt] = {}
    for g in groups:
        seen.setdefault((g.instruction, g.input), Prompt(g.instruction, g.input))
    return list(seen.values())


def reward_function(scorer):
    """TRL's reward-function interface over a RewardScorer: the dataset's `instruction` and `input` columns come
    along with each completion, so the reward model sees the prompt in its own format, not the policy's text."""

    def reward_model(prompts, completions, instruction, input, **_) -> list[float]:
        return scorer.score([Prompt(i, x) for i, x in zip(instruction, input, strict=True)], list(completions))

    return reward_model


CLIP_KEY = "clip_ratio/region_mean"  # TRL RLOO: share of completions whose ratio the clip held, per logged step


def clip_metrics(history: Sequence[dict]) -> dict:
    """The clip's share over the run: its mean and its highest over the logged steps (None when none logged it)."""
    shares = [float(e[CLIP_KEY]) for e in history if e.get(CLIP_KEY) is not None]
    return {"clip_fraction_mean": sum(shares) / len(shares) if shares else None,
            "clip_fraction_max": max(shares, default=None)}


def _trainer_class():
    from trl import RLOOTrainer

    class PromptFormatRLOOTrainer(RLOOTrainer):
        """RLOOTrainer whose prompt tokens are the contrastive trainer's: the model's BOS where plain text gets one,
        the rendered prompt without added special tokens (a byte-level tokenizer would otherwise append EOS to the
        prompt), cut from the left to leave room for the completion."""

        prompt_prefix: list[int] = []
        max_prompt_tokens: int = 0

        def _tokenize_prompts(self, prompts: list):
            ids = []
            for text in prompts:
                body = self.processing_class(text, add_special_tokens=False)["input_ids"]
                keep = max(self.max_prompt_tokens - len(self.prompt_prefix), 1)
                ids.append(self.prompt_prefix + body[-keep:])
            return ids, None, {}

    return PromptFormatRLOOTrainer


def train_rlhf(groups: Sequence[PromptGroup], *, reward_model_path: str | Path, base_model: str,
               config: TrainingConfig, home: HomeLayout, out_dir: Path, run_name: str = OBJECTIVE,
               parent_run_id: str | None = None, tags: dict | None = None) -> TrainResult:
    """RLOO from `base_model` on the groups' prompts against the reward model at `reward_model_path`; the final
    policy is saved under `out_dir/model`, tracked in MLflow (and registered when training.register_model)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from trl import RLOOConfig

    from alignment_pipeline import tracking
    from alignment_pipeline.training.report import model_description, plot_loss_curve, registered_model_name
    from alignment_pipeline.training.reward_model import RewardScorer
    from alignment_pipeline.training.runtime import resolve_runtime
    from alignment_pipeline.training.trainer import resolve_base_model

    rl = config.rlhf
    prompts = rlhf_prompts(groups)
    if not prompts:
        raise ValueError("RLHF needs prompts: the preference sample types hold no groups")
    if not Path(reward_model_path, "config.json").is_file():
        raise ValueError(f"no reward model at {reward_model_path}: train the reward_model asset first")
    max_prompt_tokens = config.max_length - rl.max_completion_length
    if max_prompt_tokens < config.min_prompt_tokens:
        raise ValueError(f"training.max_length {config.max_length} leaves {max_prompt_tokens} prompt tokens after "
                         f"rlhf.max_completion_length {rl.max_completion_length}; at least "
                         f"{config.min_prompt_tokens} (training.min_prompt_tokens) are needed")
    runtime = resolve_runtime(config.device, config.precision)
    if runtime.world_size > 1:
        raise ValueError("the RLHF baseline runs in one process; set training.nproc_per_node: 1 for it")
    base_path = resolve_base_model(base_model, home)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    fmt = prompt_format(tokenizer)
    dataset = Dataset.from_dict({"prompt": [fmt.render(p) for p in prompts],
                                 "instruction": [p.instruction for p in prompts],
                                 "input": [p.input for p in prompts]})
    work = out_dir / "trainer"
    args = RLOOConfig(
        output_dir=str(work), per_device_train_batch_size=rl.prompts_per_step * rl.num_generations,
        num_generations=rl.num_generations, max_completion_length=rl.max_completion_length,
        temperature=rl.temperature, beta=rl.kl_beta, epsilon=rl.clip_epsilon, num_iterations=rl.num_iterations,
        learning_rate=config.learning_rate_for("rlhf"),
        num_train_epochs=config.epochs, max_steps=config.budget_steps or config.max_steps or -1, gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type=config.lr_scheduler, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        seed=config.seed, data_seed=config.seed, bf16=runtime.bf16, use_cpu=runtime.device.type == "cpu",
        gradient_checkpointing=config.gradient_checkpointing,  # TRL's default is on; the training config decides
        model_init_kwargs={"dtype": torch.float32,
                           "attn_implementation": model_attn_implementation(config.attn_implementation,
                                                                            runtime.device)},
        logging_steps=config.log_every, save_strategy="no", report_to="none", disable_tqdm=True,
    )
    scorer = RewardScorer(reward_model_path, device=str(runtime.device), max_length=config.max_length,
                          batch_size=rl.reward_batch)
    cls = _trainer_class()
    cls.prompt_prefix = [] if fmt.chat else special_prefix(tokenizer)
    cls.max_prompt_tokens = max_prompt_tokens
    params = {"objective": OBJECTIVE, "base_model": tracking.model_reference(base_model, home),
              "base_model_path": base_path,
              "reward_model_path": str(reward_model_path), "n_prompts": len(prompts), "device": str(runtime.device),
              "bf16": runtime.bf16, "seed": config.seed, "max_steps": config.max_steps, "epochs": config.epochs,
              "max_length": config.max_length, **{f"rlhf.{k}": v for k, v in rl.model_dump().items()}}
    with tracking.stage_run(home, run_name, parent_run_id=parent_run_id, params=params,
                            tags={**(tags or {}), "objective": OBJECTIVE}) as run:
        trainer = cls(model=base_path, reward_funcs=reward_function(scorer), args=args, train_dataset=dataset,
                      processing_class=tokenizer)
        trainer.train()
        train_loss = tracking.log_trainer_history(trainer.state.log_history)
        history = [e for e in trainer.state.log_history if "loss" in e]
        steps = int(trainer.state.global_step)
        last = history[-1] if history else {}
        metrics = {"steps": steps, "prompts": len(prompts), "completions_per_step": args.per_device_train_batch_size,
                   "num_iterations": args.num_iterations,
                   "reward_mean_first": history[0].get("reward") if history else None,
                   "reward_mean_last": last.get("reward"), "kl_last": last.get("kl"),
                   "completion_length_last": last.get("completions/mean_length"),
                   **clip_metrics(history), "train_loss": train_loss}
        final = save_final_model(trainer.model, tokenizer, out_dir)
        png = plot_loss_curve([{"step": e["step"], "train/loss": e["loss"]} for e in history],
                              out_dir / "loss_curve.png", title=f"{run_name} (RLOO)")
        tracking.log_metrics({f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        tracking.log_artifact(png)
        run_id = run.info.run_id
        registered = None
        if config.register_model:
            base = tracking.model_reference(base_model, home)
            batches = samples_batches(list(groups))
            registered = tracking.log_and_register(
                final, run_id=run_id, name=registered_model_name(run_name),
                tags={"objective": OBJECTIVE, "base_model": base, "samples_batches": ",".join(batches),
                      "reward_model": tracking.model_reference(reward_model_path, home), "steps": str(steps)},
                description=model_description(run_name, OBJECTIVE, groups=len(prompts), batches=batches,
                                              steps=steps, base_model=base))
    shutil.rmtree(work, ignore_errors=True)
    result = TrainResult(checkpoint_path=final, mlflow_run_id=run_id, metrics=metrics, loss_curve_png=png,
                         steps=steps, registered_model=registered, samples_batches=samples_batches(list(groups)))
    (out_dir / RESULT_FILE).write_text(json.dumps(result.metadata(), indent=2, default=str))
    log.info("rlhf: %d steps on %d prompts, reward %s -> %s", steps, len(prompts), metrics["reward_mean_first"],
             metrics["reward_mean_last"])
    return result


def train_rlhf_stage(warehouse, groups: Sequence[PromptGroup], *, base_model: str, config: TrainingConfig,
                     home: HomeLayout, out_dir: Path, run_name: str = OBJECTIVE, parent_run_id: str | None = None,
                     tags: dict | None = None) -> TrainResult:
    """`train_rlhf` against the reward model recorded in the warehouse (the reward_model asset)."""
    row = recorded_reward_model(warehouse, OBJECTIVE)
    return train_rlhf(groups, reward_model_path=row["path"], base_model=base_model, config=config, home=home,
                      out_dir=out_dir, run_name=run_name, parent_run_id=parent_run_id,
                      tags={**(tags or {}), "reward_model_run": row["mlflow_run_id"] or ""})


def recorded_reward_model(warehouse, kind: str) -> dict:
    """The reward_models row the online checkpoint `kind` optimises against; refused when none is recorded."""
    from alignment_pipeline.training.reward_model import reward_model_row

    row = reward_model_row(warehouse) if warehouse is not None else None
    if row is None:
        raise ValueError(f"the {kind} checkpoint needs a reward model: none is recorded in reward_models; "
                         "materialize the reward_model asset first")
    return row
