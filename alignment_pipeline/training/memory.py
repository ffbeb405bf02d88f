"""Per-GPU training memory estimated from a model's shapes alone (a dry run: nothing is loaded or allocated),
for DDP and for FSDP on `nproc_per_node` GPUs, as this trainer runs (training/trainer.py, training/fsdp.py).

What is counted, in bytes, with P parameters, N ranks, L decoder layers, hidden size h, MLP size i:
- weights: fp32 master weights (the trainer loads float32; bf16 is autocast or FSDP's gathered copy): 4P, or
  4P/N sharded.
- gradients: fp32, 4P (DDP adds its all-reduce buckets, another 4P) or 4P/N sharded.
- optimizer: AdamW's two fp32 moments, 8P, or 8P/N sharded.
- FSDP gathered: the root's weights (embeddings, final norm, LM head) stay gathered for the step, plus two
  decoder layers at a time (the one running and the one prefetched), in the compute dtype; the unsharded
  gradients of the root and one layer before their reduce-scatter, in fp32.
- activations: per token and decoder layer, the tensors a LLaMA block keeps for backward (its input and
  normed input, q/k/v, rotated q/k, attention output, the second norm's input and output, gate, up, act(gate)
  and their product): 10h + 4i values. With activation checkpointing a layer keeps only its input (h values)
  and one layer at a time is recomputed in full. Plus the packed 4D attention mask (boolean and an additive
  copy), and the chunked LM head's logits (training.logprob_chunk_size rows, fp32 with its backward).
  Tokens per micro-batch: per_device_batch packed groups, each a prompt plus num_responses responses, every
  (prompt, response) at most max_length: at most per_device_batch × num_responses × max_length tokens.
- overhead: CUDA context, communication buffers and allocator slack, a fixed assumption.
It is an estimate for choosing settings: allocator fragmentation and kernel workspaces vary by release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alignment_pipeline.training.config import TrainingConfig

GIB = 2**30
OVERHEAD_BYTES = 3 * GIB  # CUDA context (~0.5-1 GiB), NCCL buffers, caching-allocator slack


@dataclass(frozen=True)
class ModelShape:
    """The shapes of a LLaMA-like decoder that decide its memory."""

    name: str
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int
    kv_heads: int
    tied_embeddings: bool = False

    @property
    def layer_params(self) -> int:
        kv = self.hidden // self.heads * self.kv_heads
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate \
            + 2 * self.hidden  # q, o; k, v; gate, up, down; two norms

    @property
    def root_params(self) -> int:
        """Outside the decoder layers: embeddings, the LM head unless tied, the final norm."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params


# The paper's base: the Stanford Alpaca checkpoint, an instruction-tuned LLaMA-7B (its config.json shapes).
LLAMA_7B = ModelShape("LLaMA-7B", hidden=4096, layers=32, vocab=32000, intermediate=11008, heads=32, kv_heads=32)
KNOWN_SHAPES: dict[str, ModelShape] = {
    "chavinlo/alpaca-native": LLAMA_7B,
    "huggyllama/llama-7b": LLAMA_7B,
    "meta-llama/Llama-2-7b-hf": LLAMA_7B,
}


def model_shape(base_model: str, models_dir: Path | None = None) -> ModelShape:
    """The shapes of `base_model`: a known hub id, a local model directory or config.json, or a model this
    project has already built under `models_dir` ('tiny:<name>', packaged names). Hub configs are not fetched
    (the estimate runs offline)."""
    if base_model in KNOWN_SHAPES:
        return KNOWN_SHAPES[base_model]
    candidates = [Path(base_model).expanduser()]
    if models_dir is not None:
        candidates.append(Path(models_dir) / base_model.split(":", 1)[-1])
    for path in candidates:
        config = path / "config.json" if path.is_dir() else path
        if config.name.endswith(".json") and config.is_file():
            return shape_from_config(json.loads(config.read_text()), name=base_model)
    raise ValueError(
        f"no model shapes for {base_model!r}: it is not among the known ones ({', '.join(KNOWN_SHAPES)}), not a "
        "local model directory or config.json, and not built under the home's models/ yet; hub configs are not "
        "fetched offline, so pass --model-config with a local config.json of the base model")


def shape_from_config(config: dict, *, name: str) -> ModelShape:
    """A Hugging Face config.json of a LLaMA-like decoder."""
    needed = ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size", "num_attention_heads")
    missing = [k for k in needed if k not in config]
    if missing:
        raise ValueError(f"{name}: config has no {', '.join(missing)}; not a LLaMA-like decoder this estimate "
                         "knows")
    return ModelShape(name=name, hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                      vocab=config["vocab_size"], intermediate=config["intermediate_size"],
                      heads=config["num_attention_heads"],
                      kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                      tied_embeddings=bool(config.get("tie_word_embeddings", False)))


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU, by what holds them."""

    strategy: str
    world_size: int
    weights: float
    gradients: float
    optimizer: float
    gathered: float  # FSDP: gathered weights and unsharded gradients in flight; DDP: 0
    activations: float  # without activation checkpointing
    activations_checkpointed: float
    logits: float
    overhead: float
    gradient_checkpointing: bool

    @property
    def total(self) -> float:
        kept = self.activations_checkpointed if self.gradient_checkpointing else self.activations
        return (self.weights + self.gradients + self.optimizer + self.gathered + kept + self.logits
                + self.overhead)


def micro_batch_tokens(config: TrainingConfig) -> int:
    """The most tokens one micro-batch runs: per_device_batch packed groups of a prompt and num_responses
    responses, each (prompt, response) at most max_length."""
    return config.per_device_batch * group_tokens(config)


def group_tokens(config: TrainingConfig) -> int:
    return config.num_responses * config.max_length


def estimate(shape: ModelShape, config: TrainingConfig, *, strategy: str, world_size: int,
             bf16: bool = True) -> MemoryEstimate:
    """Per-GPU bytes of training `shape` with `config` under `strategy` ("ddp" or "fsdp") on `world_size`
    GPUs; `bf16`: compute in bf16 (autocast, or FSDP's bf16 gathers), as on GPUs that support it."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"unknown strategy {strategy!r}; choose ddp or fsdp")
    p = shape.params
    act = 2 if bf16 else 4  # bytes per activation value (and per gathered weight under FSDP)
    shard = world_size if strategy == "fsdp" else 1
    tokens, rows = micro_batch_tokens(config), group_tokens(config)
    per_token_layer = act * (10 * shape.hidden + 4 * shape.intermediate)
    mask = config.per_device_batch * rows * rows * (1 + act)
    scored = min(config.logprob_chunk_size, tokens)
    if strategy == "fsdp":
        gathered = act * (shape.root_params + 2 * shape.layer_params) + 4 * (shape.root_params + shape.layer_params)
        buckets = 0
    else:
        gathered, buckets = 0, 4 * p  # DDP copies gradients into its all-reduce buckets
    return MemoryEstimate(
        strategy=strategy, world_size=world_size, weights=4 * p / shard, gradients=4 * p / shard + buckets,
        optimizer=8 * p / shard, gathered=gathered,
        activations=tokens * shape.layers * per_token_layer + mask,
        activations_checkpointed=tokens * shape.layers * act * shape.hidden + tokens * per_token_layer + mask,
        logits=scored * shape.vocab * (act + 8), overhead=OVERHEAD_BYTES,
        gradient_checkpointing=config.gradient_checkpointing)


def report_lines(shape: ModelShape, config: TrainingConfig, *, gpu_memory_gib: float = 80.0,
                 bf16: bool = True) -> list[str]:
    """The estimate as a table: DDP against FSDP on training.nproc_per_node GPUs, and whether each fits."""
    n = config.nproc_per_node
    ddp, sharded = (estimate(shape, config, strategy=s, world_size=n, bf16=bf16) for s in ("ddp", "fsdp"))
    ckpt = "on" if config.gradient_checkpointing else "off"
    lines = [
        f"model {shape.name}: {shape.params / 1e9:.2f}B parameters (hidden {shape.hidden}, {shape.layers} layers, "
        f"vocab {shape.vocab}, intermediate {shape.intermediate})",
        f"micro-batch: {config.per_device_batch} packed group(s) of up to {config.num_responses} × "
        f"{config.max_length} tokens = {micro_batch_tokens(config)} tokens; {'bf16' if bf16 else 'fp32'} compute; "
        f"activation checkpointing {ckpt}; {n} GPU(s) of {gpu_memory_gib:g} GiB",
        f"{'GiB per GPU':<40}{'ddp':>10}{f'fsdp ×{n}':>12}",
    ]
    rows = [("weights (fp32 master)", "weights"), ("gradients (fp32; DDP: + its buckets)", "gradients"),
            ("optimizer (AdamW moments, fp32)", "optimizer"), ("gathered weights, unsharded grads", "gathered"),
            ("activations, no checkpointing", "activations"),
            ("activations, checkpointing", "activations_checkpointed"), ("LM head logits (chunked)", "logits"),
            ("CUDA context, buffers (assumed)", "overhead")]
    for label, key in rows:
        lines.append(f"{label:<40}{getattr(ddp, key) / GIB:>10.2f}{getattr(sharded, key) / GIB:>12.2f}")
    lines.append(f"{f'total (checkpointing {ckpt})':<40}{ddp.total / GIB:>10.2f}{sharded.total / GIB:>12.2f}")
    fits = {e.strategy: e.total <= gpu_memory_gib * GIB for e in (ddp, sharded)}
    lines.append(f"{'fits':<40}{'yes' if fits['ddp'] else 'no':>10}{'yes' if fits['fsdp'] else 'no':>12}")
    lines.append(f"loading: every rank first holds the full fp32 model, {4 * shape.params / GIB:.2f} GiB, before "
                 "FSDP shards it")
    lines.append(f"configured: training.strategy {config.strategy}")
    return lines
