from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from alignment_pipeline.llm.config import SMOLLM2


class TrainingConfig(BaseModel):
    base_model: str = "tiny:tiny-llama"
    learning_rate: float = 2e-5
    epochs: int = 1
    per_device_batch: int = 4  # prompts per micro-batch, each with all of its responses
    grad_accum: int = 1
    max_length: int = 256  # per (prompt, response) sequence; the prompt is cut from its left to fit
    min_prompt_tokens: int = 16  # a response is cut (right) only when it would leave less prompt than this
    margin: float = 10.0
    rating_scale: float = 7.0
    ratio: float = 0.2
    aggregate: Literal["mean", "max"] = "mean"
    num_responses: int = 3  # responses per prompt for the contrastive objectives (best + a seeded sample)
    seed: int = 0

    # Optimisation.
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int | None = None  # cap on optimizer steps (None: epochs decide)

    # Baselines.
    dpo_beta: float = 0.1
    dpo_label_smoothing: float = 0.0
    dpo_pairs: Literal["best_vs_rest", "best_vs_worst"] = "best_vs_rest"
    sppo_eta: float = 1000.0  # η = 1/β with the SPPO paper's β = 1e-3
    sft_baseline_source: Literal["all", "imitation"] = "all"  # sample types the SFT baseline's best responses come from
    # DPO/SPPO rank responses by their ratings; self-critique ratings rate the draft, not the feedback, so
    # by default those groups carry no preference between their responses and stay out.
    preference_baseline_types: list[Literal["imitation", "self_critique", "realignment"]] = ["imitation", "realignment"]

    # Speed and memory.
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA with bf16 support, else fp32
    gradient_checkpointing: bool = False
    logprob_chunk_size: int = 1024  # response positions per LM-head chunk
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
    save_every: int = 50  # optimizer steps between resumable checkpoints
    keep_checkpoints: int = 2
    log_every: int = 1
    register_model: bool = True

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
