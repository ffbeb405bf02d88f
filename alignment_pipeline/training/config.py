from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from alignment_pipeline.llm.config import SMOLLM2, missing_local_model
from alignment_pipeline.strict import StrictModel


class TrainingConfig(StrictModel):
    base_model: str = "tiny:tiny-llama"
    learning_rate: float = Field(2e-5, gt=0)
    epochs: int = Field(1, ge=1)
    per_device_batch: int = Field(4, ge=1)  # prompts per micro-batch, each with all of its responses
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(256, ge=8)  # per (prompt, response) sequence; the prompt is cut from its left to fit
    min_prompt_tokens: int = Field(16, ge=0)  # a response is cut (right) only when it would leave less prompt than this
    margin: float = Field(10.0, ge=0)
    rating_scale: float = Field(7.0, gt=0)
    ratio: float = Field(0.2, ge=0)
    aggregate: Literal["mean", "max"] = "mean"
    num_responses: int = Field(3, ge=1)  # responses per prompt for the contrastive objectives (best + a seeded sample)
    seed: int = 0

    # Optimisation.
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # cap on optimizer steps (None: epochs decide)

    # Baselines.
    dpo_beta: float = Field(0.1, gt=0)
    dpo_label_smoothing: float = 0.0
    dpo_pairs: Literal["best_vs_rest", "best_vs_worst"] = "best_vs_rest"
    sppo_eta: float = Field(1000.0, gt=0)  # η = 1/β with the SPPO paper's β = 1e-3
    sft_baseline_source: Literal["all", "imitation"] = "all"  # sample types the SFT baseline's best responses come from
    # DPO/SPPO rank responses by their ratings; self-critique ratings rate the draft, not the feedback, so
    # by default those groups carry no preference between their responses and stay out.
    preference_baseline_types: list[Literal["imitation", "self_critique", "realignment"]] = ["imitation", "realignment"]

    # Speed and memory.
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA with bf16 support, else fp32
    gradient_checkpointing: bool = False
    logprob_chunk_size: int = Field(1024, ge=1)  # response positions per LM-head chunk
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    peak_tflops: float | None = Field(None, description="accelerator peak for MFU; None: looked up by device name")

    # Multi-GPU (one node): more than one process makes the checkpoint assets launch the trainer with torchrun
    # (DDP, rank 0 reports through Dagster Pipes). Effective batch = per_device_batch × grad_accum × nproc_per_node.
    nproc_per_node: int = Field(1, ge=1, description="training processes (GPUs) on this node")
    master_port: int | None = Field(None, ge=1, le=65535,
                                    description="rendezvous port; None: torchrun --standalone picks a free one")

    # LoRA (peft): the final checkpoint is merged, so the next stage loads a plain model.
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"

    # Checkpoints and tracking.
    save_every: int = Field(50, ge=1)  # optimizer steps between resumable checkpoints
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    register_model: bool = True

    @field_validator("base_model")
    @classmethod
    def _local_model_exists(cls, value: str) -> str:
        problem = missing_local_model(value)
        if problem:  # said now, not after the whole sandbox has run
            raise ValueError(problem)
        return value

    @classmethod
    def profile(cls, name: str) -> TrainingConfig:
        if name == "paper":
            return cls(base_model="huggyllama/llama-7b", learning_rate=2e-5, epochs=2, per_device_batch=1,
                       grad_accum=8, max_length=360, margin=10.0, gradient_checkpointing=True, save_every=200)
        if name == "small":
            # A few steps per checkpoint: enough to see each objective move a real model on 2 CPU cores.
            return cls(base_model=SMOLLM2, learning_rate=2e-5, per_device_batch=2, max_length=256,
                       max_steps=2, save_every=100)
        return cls(learning_rate=1e-3, max_length=192, sppo_eta=10.0, save_every=20)
