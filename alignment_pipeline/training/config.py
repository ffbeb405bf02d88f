from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from alignment_pipeline.llm.config import model_reference_problem
from alignment_pipeline.strict import StrictModel


class RewardModelConfig(StrictModel):
    """The reward model of the online baselines (rlhf, sppo_online): a sequence classifier with one score, trained
    with the Bradley–Terry loss on the preference pairs DPO uses, after ChatGLM-RLHF's length balancing
    (arXiv 2404.00934), with TRL RewardTrainer's zero-mean score penalty in its loss."""

    heldout_share: float = Field(0.1, ge=0, lt=1, description="share of prompts (not pairs) held out to measure "
                                 "pair accuracy; chosen by a seeded hash of the prompt text")
    # 30 pairs: a 95% interval of about ±0.18 around an accuracy of 0.5; fewer say little about the model.
    min_heldout_pairs: int = Field(30, ge=0, description="held-out pairs below which the reward_model asset's "
                                   "heldout_pairs check warns that its held-out accuracy says little")
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate (InstructGPT's reward model: 9e-6)")
    epochs: int = Field(1, ge=1, description="passes over the pairs; InstructGPT's reward model overfits after one")
    per_device_batch: int = Field(8, ge=1, description="preference pairs per micro-batch")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps; null: epochs decide")
    # Scoring every training pair after training costs a forward pass per response; a seeded sample estimates the
    # fit for less where time is short.
    train_accuracy_pairs: int | None = Field(None, ge=1, description="training pairs (a seeded sample) scored for "
                                             "train accuracy after training; null: all of them")
    center_coef: float = Field(0.01, ge=0, description="weight of mean((r_chosen + r_rejected)²) added to the "
                               "training loss, which keeps the scores centred on zero (TRL RewardTrainer's "
                               "center_rewards_coefficient, 0.01 as TRL recommends); 0: none")
    length_balance: bool = Field(True, description="bucket pairs by length difference and balance longer-won "
                                 "against shorter-won pairs in each bucket (ChatGLM-RLHF)")
    length_bucket_width: int = Field(20, ge=1, description="width of a length-difference bucket, in response "
                                     "tokens")


class RLHFConfig(StrictModel):
    """Policy optimisation against the reward model, sampling from the policy as it trains. The rlhf baseline is TRL's
    RLOOTrainer, whose reward carries the KL penalty to the reference as the paper's TRLX PPO did, and whose update
    is PPO's clipped surrogate, run num_iterations times on each batch of completions. The sppo_online baseline
    (training/sppo_online.py) samples with the same settings (num_generations per prompt, max_completion_length,
    temperature, prompts_per_step, reward_batch) and trains with the SPPO settings of the training section."""

    kl_beta: float = Field(0.05, ge=0, description="KL penalty to the reference model, subtracted from the "
                           "reward (TRLX's PPO init_kl_coef and TRL RLOO's default)")
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt; each is baselined by the "
                                 "mean reward of the others (RLOO's k = 4)")
    prompts_per_step: int = Field(4, ge=1, description="prompts per optimizer step, each with num_generations "
                                  "completions")
    max_completion_length: int = Field(128, ge=1, description="tokens a sampled completion may run to")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the completions")
    learning_rate: float = Field(1e-6, gt=0, description="policy learning rate (TRL RLOO's default)")
    clip_epsilon: float = Field(0.2, gt=0, description="PPO clip range of the probability ratio")
    # One pass leaves the ratio at exactly 1 (the batch was sampled from the weights being updated), so the clip
    # acts only from the second pass on.
    num_iterations: int = Field(2, ge=1, description="RLOO optimisation passes over each batch of completions "
                                "before sampling the next (TRL's num_iterations, μ); from the second pass the "
                                "policy has moved and the clip range acts. 1: plain on-policy REINFORCE-style")
    sppo_iterations: int = Field(3, ge=1, description="online SPPO: policy iterations, each sampling "
                                 "num_generations completions per prompt from the current policy, scoring them "
                                 "with the reward model and updating against that iteration's starting policy "
                                 "(the SPPO paper runs 3)")
    sppo_fresh_prompts: bool = Field(True, description="online SPPO: each iteration samples its own share of the "
                                     "prompts, as the SPPO paper gives each iteration fresh prompts; false: every "
                                     "iteration samples every prompt")
    reward_batch: int = Field(8, ge=1, description="completions the reward model scores together")


class TrainingConfig(StrictModel):
    """Fine-tuning on the samples: the Stable Alignment objective, its baselines, and how they run.

    The Stable Alignment loss per prompt, with ℓ the length-normalised NLL of a response and r its rating:
    L = ℓ_best + ratio × max(0, agg_i [ℓ_best − ℓ_i + (r_best − r_i) / rating_scale × margin]) over the
    responses i rated below the best; L = ℓ_best where there is none.
    """

    # The model and the data it sees.
    base_model: str = Field("tiny:tiny-llama", description="model the first stage starts from: hub id, local "
                            "directory or 'tiny:<name>'")
    max_length: int = Field(256, ge=8, description="tokens per (prompt, response) sequence; the prompt is cut "
                            "from its left to fit")
    min_prompt_tokens: int = Field(16, ge=0, description="the prompt keeps at least max(this, max_length / 2) "
                                   "tokens (all of it when shorter); a longer response is cut on its right")
    num_responses: int = Field(3, ge=1, description="responses per prompt the contrastive loss compares: the "
                               "best plus a seeded sample of the rest")
    seed: int = Field(0, description="seeds data order, response sampling and initialisation")

    # The Stable Alignment loss (see the class docstring).
    margin: float = Field(10.0, ge=0, description="NLL gap demanded between the best response and one rated "
                          "rating_scale points lower; scaled by the rating difference")
    rating_scale: float = Field(7.0, gt=0, description="rating span dividing r_best − r_i, so margin applies in "
                                "full to a gap of this many rating points")
    ratio: float = Field(0.2, ge=0, description="weight of the contrastive hinge against the NLL of the best "
                         "response (0: plain SFT on the best)")
    aggregate: Literal["mean", "max"] = Field("mean", description="how the hinge terms of the lower-rated "
                                              "responses combine before max(0, ·): their mean or their max")
    stable_alignment_learning_rate: float = Field(2e-5, gt=0, description="peak learning rate of the Stable "
                                                  "Alignment loss: 2e-5, the paper's released training script")

    # Optimisation. Each objective trains at its own peak learning rate (`<objective>_learning_rate`, beside the
    # objective's other settings), its method's published value; `learning_rate` replaces them all at once.
    learning_rate: float | None = Field(None, gt=0, description="one peak learning rate (AdamW) for every "
                                        "objective, replacing the per-objective rates; null: each objective's own")
    epochs: int = Field(1, ge=1, description="passes over the samples")
    per_device_batch: int = Field(4, ge=1, description="prompts per micro-batch, each with all of its responses")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warmup")
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="share of the optimizer steps spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient norm clipped to")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps; null: epochs decide")
    # Equal budgets: methods are compared at the same number of optimizer steps of the same number of prompts,
    # not at whatever their data sizes and epochs give.
    budget_steps: int | None = Field(None, ge=1, description="optimizer steps every checkpoint trains, exactly: "
                                     "its data repeats over as many epochs as that takes (epochs and max_steps "
                                     "then do not apply); the curriculum's three stages share one budget "
                                     "(curriculum_shares), so stage 3 has trained what one baseline trains; "
                                     "null: epochs and max_steps decide")
    curriculum_shares: list[float] = Field([1.0, 1.0, 1.0], min_length=3, max_length=3, description="how the "
                                           "three curriculum stages split budget_steps (relative weights > 0)")
    # The published rates are those of 7B models trained for thousands of steps; a small model trained for a few
    # hundred may need another. A sweep (training/sweep.py) tries multiples of the objective's own rate in short
    # trials and trains the stage at the one with the lowest held-out loss of the objective.
    lr_sweep: list[float] | None = Field(None, description="multipliers of the objective's own (published) "
                                         "learning rate to try before a stage trains, e.g. [1, 10, 100]; the "
                                         "chosen rate also replaces `learning_rate`; null: no sweep")
    lr_sweep_steps: int = Field(20, ge=1, description="optimizer steps of each sweep trial, from the stage's "
                                "starting model on the prompts not held out")
    lr_sweep_heldout_share: float = Field(0.2, gt=0, lt=1, description="share of prompts (not groups) held out "
                                          "to score the sweep's trials; chosen by a seeded hash of the prompt "
                                          "text. The stage itself then trains on every prompt")
    lr_sweep_heldout_max: int | None = Field(None, ge=1, description="held-out prompts the trials are scored "
                                             "on: those of the first prompts of the held-out share (the rest "
                                             "stay out of the trials too); null: all of them. Scoring is most "
                                             "of a short sweep's time")

    # Baselines, each with its method's published settings.
    sft_learning_rate: float = Field(2e-5, gt=0, description="peak learning rate of SFT (the SFT baseline and "
                                     "stage 2): 2e-5, the Stanford Alpaca recipe, as in the paper's training script")
    dpo_learning_rate: float = Field(5e-7, gt=0, description="peak learning rate of DPO: 5e-7, the Zephyr DPO "
                                     "recipe (alignment-handbook) on a 7B SFT model; the DPO paper used 1e-6")
    dpo_beta: float = Field(0.1, gt=0, description="DPO β: strength of the pull toward the reference model; 0.1, "
                            "the DPO paper's and TRL DPOConfig's default")
    dpo_label_smoothing: float = Field(0.0, ge=0, le=0.5, description="conservative DPO: assumed share of "
                                       "flipped preference labels")
    dpo_pairs: Literal["best_vs_rest", "best_vs_worst"] = Field(
        "best_vs_rest", description="DPO pairs per prompt: the best against each lower-rated response, or "
        "against the worst only")
    sppo_learning_rate: float = Field(5e-7, gt=0, description="peak learning rate of SPPO (checkpoints sppo and "
                                      "sppo_online, each online iteration afresh): 5e-7, the SPPO paper's recipe "
                                      "(arXiv 2405.00675, Mistral-7B and Llama-3-8B)")
    sppo_eta: float = Field(1000.0, gt=0, description="SPPO η = 1/β (the SPPO paper's β = 1e-3); "
                          "sppo and sppo_online")
    # The paper's win-rates come from a preference model (PairRM); here the ratings play it, and the temperature
    # says how many rating points make one logit. 1 keeps the win-rates of the samples_sppo view and
    # `export --format sppo` (σ(r_i − r_j)): one point on the 1-7 scale is a 73% preference, the full span 99.75%.
    sppo_rating_temperature: float = Field(1.0, gt=0, description="SPPO preference from ratings: P(i ≻ j) = "
                                           "σ((r_i − r_j) / temperature); 1: the samples_sppo view's scale")
    rrhf_learning_rate: float = Field(2e-5, gt=0, description="peak learning rate of RRHF: 2e-5, its paper's "
                                      "Alpaca training script (arXiv 2304.05302; 3 epochs, cosine, warmup 0.03)")
    rrhf_rank_weight: float = Field(1.0, ge=0, description="weight of RRHF's ranking term against its SFT term: "
                                    "1, the paper's L = L_rank + L_ft (its training script's --rrhf_weight 1)")
    coh_learning_rate: float = Field(1e-5, gt=0, description="peak learning rate of Chain-of-Hindsight: 1e-5, the "
                                     "CoH paper's fine-tuning rate (arXiv 2302.02676)")
    coh_positive_feedback: str = Field("A helpful answer:", min_length=1, description="Chain-of-Hindsight feedback "
                                       "before a higher-rated response; also what the CoH checkpoint is served "
                                       "after (training/hindsight.py). CoH's own dialogue phrase")
    coh_negative_feedback: str = Field("An unhelpful answer:", min_length=1, description="Chain-of-Hindsight "
                                       "feedback before a lower-rated response. CoH's own dialogue phrase")
    # CoH samples a feedback template per chain (its Algorithm 1); these are its paper's and its released code's
    # phrasings ("Good:"/"Bad:", "a better/worse answer", "The following is a better/worse response.").
    coh_feedback_templates: list[tuple[str, str]] = Field(
        [("Good:", "Bad:"), ("A better answer:", "A worse answer:"),
         ("The following is a better response.", "The following is a worse response.")],
        description="further Chain-of-Hindsight (positive, negative) feedback pairs: each chain takes one of "
        "these or (coh_positive_feedback, coh_negative_feedback), drawn by a seeded generator; the checkpoint is "
        "served after coh_positive_feedback. Empty: that one pair only")
    coh_past_mask_max: float = Field(0.05, ge=0, lt=1, description="Chain-of-Hindsight's shortcut guard: the "
                                     "earlier response of a chain loses a share, drawn uniformly from [0, this], "
                                     "of its tokens from the context of the response after it (CoH masks 0-5% "
                                     "of past tokens); 0: none")
    coh_pretrain_weight: float = Field(0.01, ge=0, description="λ of Chain-of-Hindsight's pretraining term "
                                       "(its eq. 3; 0.01, its released code's pt_loss_weight). With no "
                                       "pretraining corpus offline, the term is plain SFT on each prompt's "
                                       "best-rated response, without feedback; 0: none")
    sft_baseline_source: Literal["all", "imitation"] = Field(
        "all", description="sample types the SFT baseline's best responses come from")
    # Self-critique ratings rate the draft, not the feedback, so those groups carry no preference between
    # their responses and stay out by default.
    preference_baseline_types: list[Literal["imitation", "self_critique", "realignment"]] = Field(
        ["imitation", "realignment"], description="sample types the preference baselines (DPO, SPPO, RRHF, "
        "Chain-of-Hindsight) rank by rating")

    # Speed and memory.
    device: str = Field("auto", description="torch device; auto: cuda if available, else cpu")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CUDA with bf16 support, else fp32")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                         "memory, more time")
    logprob_chunk_size: int = Field(1024, ge=1, description="response positions per LM-head chunk (bounds the "
                                    "logits held at once)")
    # flex computes only the blocks the prefix-sharing mask lets through (no cross-response blocks). SDPA stays
    # the default: torch's flex attention has no backward on CPU, where flex falls back to SDPA.
    attn_implementation: Literal["sdpa", "eager", "flex"] = Field(
        "sdpa", description="attention kernel: sdpa (dense mask), eager, or flex (flex attention with a block "
        "mask that skips masked blocks; CUDA only, SDPA on CPU)")
    disable_dropout: bool = Field(True, description="turn the policy's dropout off, so it scores as its reference "
                                  "(eval mode) does and the log-ratio starts at zero (TRL DPO's default)")
    peak_tflops: float | None = Field(None, description="accelerator peak TFLOP/s for MFU; null: looked up by "
                                      "device name")

    # Multi-GPU (one node): more than one process makes the checkpoint assets launch the trainer with torchrun
    # (DDP, rank 0 reports through Dagster Pipes). Effective batch = per_device_batch × grad_accum × nproc_per_node.
    nproc_per_node: int = Field(1, ge=1, description="training processes (GPUs) on this node")
    master_port: int | None = Field(None, ge=1, le=65535,
                                    description="rendezvous port; null: torchrun --standalone picks a free one")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="with more than one process: ddp replicates the model on every GPU; fsdp (FSDP2) "
        "shards weights, gradients and optimizer state across them (models that do not fit one GPU)")
    distributed_timeout_s: int = Field(1800, ge=60, description="seconds a collective may wait for the other "
                                       "ranks before the process group fails (rank 0's checkpoint writes "
                                       "happen while the others wait)")

    # LoRA (peft): the final checkpoint is merged, so the next stage loads a plain model.
    lora: bool = Field(False, description="train LoRA adapters instead of every weight")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    lora_target_modules: str | list[str] = Field("all-linear", description="modules given adapters (peft names)")

    # Checkpoints and tracking.
    save_every: int = Field(50, ge=1, description="optimizer steps between resumable checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="resumable checkpoints kept on disk")
    log_every: int = Field(1, ge=1, description="optimizer steps between logged metrics")
    register_model: bool = Field(True, description="register each final model in the MLflow model registry")

    # The online baselines (checkpoints rlhf, sppo_online): their reward model, then policy optimisation against it.
    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig,
                                            description="the reward model the online baselines (rlhf, "
                                            "sppo_online) optimise against")
    rlhf: RLHFConfig = Field(default_factory=RLHFConfig, description="policy optimisation against the reward model "
                             "(checkpoints rlhf and sppo_online)")

    def learning_rate_for(self, objective: str) -> float:
        """The peak learning rate `objective` trains at: `learning_rate` when set, else the objective's own. A
        sweep's choice wins over `learning_rate`: training/sweep.py's `chosen_config` sets the objective's own
        rate and clears `learning_rate`."""
        own = self.own_learning_rate(objective)
        return self.learning_rate if self.learning_rate is not None else own

    def own_learning_rate(self, objective: str) -> float:
        """`objective`'s own peak learning rate (its method's published one unless configured), whatever
        `learning_rate` says."""
        field = f"{objective}_learning_rate"
        if objective == "rlhf":  # its own section holds its settings
            return self.rlhf.learning_rate
        if field in type(self).model_fields:
            return getattr(self, field)
        raise ValueError(f"unknown objective {objective!r}: no training.{field}")

    @field_validator("curriculum_shares")
    @classmethod
    def _positive_shares(cls, value: list[float]) -> list[float]:
        if any(not v > 0 for v in value):
            raise ValueError(f"curriculum_shares must all be > 0, got {value}")
        return value

    @field_validator("lr_sweep")
    @classmethod
    def _positive_multipliers(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("lr_sweep needs at least one multiplier (null: no sweep)")
        bad = [m for m in value if not (math.isfinite(m) and m > 0)]
        if bad:
            raise ValueError(f"lr_sweep multipliers must be finite and > 0, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"lr_sweep lists a multiplier twice: {value}")
        return value

    @field_validator("coh_feedback_templates")
    @classmethod
    def _phrases_written(cls, value: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for pair in value:
            if not all(phrase.strip() for phrase in pair):
                raise ValueError(f"a Chain-of-Hindsight feedback pair needs two non-blank phrases, got {pair!r}")
        return value

    @field_validator("base_model")
    @classmethod
    def _loadable_model(cls, value: str) -> str:
        problem = model_reference_problem(value)
        if problem:  # said now, not after the whole sandbox has run
            raise ValueError(problem)
        return value
