from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from alignment_pipeline.llm.config import missing_local_model
from alignment_pipeline.strict import StrictModel


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
    min_prompt_tokens: int = Field(16, ge=0, description="a response is cut (right) only when it would leave "
                                   "fewer prompt tokens than this")
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

    # Optimisation.
    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate (AdamW)")
    epochs: int = Field(1, ge=1, description="passes over the samples")
    per_device_batch: int = Field(4, ge=1, description="prompts per micro-batch, each with all of its responses")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warmup")
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="share of the optimizer steps spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient norm clipped to")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps; null: epochs decide")

    # Baselines.
    dpo_beta: float = Field(0.1, gt=0, description="DPO β: strength of the pull toward the reference model")
    dpo_label_smoothing: float = Field(0.0, ge=0, le=0.5, description="conservative DPO: assumed share of "
                                       "flipped preference labels")
    dpo_pairs: Literal["best_vs_rest", "best_vs_worst"] = Field(
        "best_vs_rest", description="DPO pairs per prompt: the best against each lower-rated response, or "
        "against the worst only")
    sppo_eta: float = Field(1000.0, gt=0, description="SPPO η = 1/β (the SPPO paper's β = 1e-3)")
    sft_baseline_source: Literal["all", "imitation"] = Field(
        "all", description="sample types the SFT baseline's best responses come from")
    # Self-critique ratings rate the draft, not the feedback, so those groups carry no preference between
    # their responses and stay out by default.
    preference_baseline_types: list[Literal["imitation", "self_critique", "realignment"]] = Field(
        ["imitation", "realignment"], description="sample types DPO and SPPO rank by rating")

    # Speed and memory.
    device: str = Field("auto", description="torch device; auto: cuda if available, else cpu")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CUDA with bf16 support, else fp32")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                         "memory, more time")
    logprob_chunk_size: int = Field(1024, ge=1, description="response positions per LM-head chunk (bounds the "
                                    "logits held at once)")
    attn_implementation: Literal["sdpa", "eager"] = Field("sdpa", description="attention kernel")
    peak_tflops: float | None = Field(None, description="accelerator peak TFLOP/s for MFU; null: looked up by "
                                      "device name")

    # Multi-GPU (one node): more than one process makes the checkpoint assets launch the trainer with torchrun
    # (DDP, rank 0 reports through Dagster Pipes). Effective batch = per_device_batch × grad_accum × nproc_per_node.
    nproc_per_node: int = Field(1, ge=1, description="training processes (GPUs) on this node")
    master_port: int | None = Field(None, ge=1, le=65535,
                                    description="rendezvous port; null: torchrun --standalone picks a free one")

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

    @field_validator("base_model")
    @classmethod
    def _local_model_exists(cls, value: str) -> str:
        problem = missing_local_model(value)
        if problem:  # said now, not after the whole sandbox has run
            raise ValueError(problem)
        return value
