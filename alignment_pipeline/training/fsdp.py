"""Fully sharded data parallel training (FSDP2, `training.strategy: fsdp`): each rank holds 1/N of the weights,
gradients and optimizer state, and gathers one decoder layer's weights at a time for its forward and backward.

- `shard_model`: every decoder layer is its own FSDP unit, then the root: the `PackedLogps` wrapper the forward
  runs through (training/forward.py), so the root's own parameters (embeddings, final norm, LM head) are
  gathered around the whole packed forward. bf16 runs gather bf16 weights and reduce gradients in fp32; fp32
  runs keep fp32 throughout. Activation checkpointing (training.gradient_checkpointing) is switched on on the
  model before sharding, so recomputation re-gathers a layer's weights like its forward did.
- Resumable checkpoints: model and optimizer state through torch.distributed.checkpoint (DCP), every rank
  writing its own shards into `step-N/dcp`; rank 0 adds the tokenizer and the trainer's own state
  (training/checkpointing.py) and renames the directory into place, as for DDP.
- The final model: gathered into one full state dict on rank 0 (`full_state_dict`), saved with
  `save_pretrained`, so the next stage and the benchmarks load a plain Hugging Face checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alignment_pipeline.training import checkpointing as ckpt
from alignment_pipeline.training import distributed as dist_utils
from alignment_pipeline.training.forward import PackedLogps
from alignment_pipeline.training.runtime import Runtime

DCP_DIR = "dcp"  # inside a resumable checkpoint: the sharded model and optimizer state
_ROOT_PREFIX = "model."  # the root wrapper's attribute holding the causal LM


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The causal LM's repeated decoder blocks (LLaMA-like models: `get_decoder().layers`)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None or len(layers) == 0:
        raise TypeError(f"{type(model).__name__} has no decoder layers to shard (expected get_decoder().layers); "
                        "train it with training.strategy: ddp")
    return list(layers)


def shard_model(model: torch.nn.Module, runtime: Runtime) -> PackedLogps:
    """Shard `model` in place across the process group; returns the root the forward must go through (its
    parameters stay reachable as `model.parameters()`, now sharded DTensors)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if hasattr(model, "get_base_model"):
        raise ValueError("training.strategy fsdp does not train LoRA adapters; use ddp for lora: true")
    mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
    if runtime.bf16:  # bf16 weights for compute and the gathers, fp32 master weights and gradient reduction
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    root = PackedLogps(model)
    fully_shard(root, mesh=mesh, mp_policy=policy)
    return root


def clip_grad_norm(params: list, max_norm: float) -> torch.Tensor:
    """Clip the sharded gradients to a global norm; returns that norm (before clipping) as a plain tensor,
    the same on every rank."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def save_checkpoint(root_dir: Path, module: torch.nn.Module, optimizer, tokenizer, scheduler,
                    state: ckpt.TrainState, runtime: Runtime, *, keep: int, rng_per_rank: list[dict] | None
                    ) -> Path | None:
    """Every rank: write its shards of the model and optimizer state into a new checkpoint; rank 0 then adds
    the tokenizer and trainer state and renames it into place (returns its path; None on other ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp = dist_utils.broadcast_object(ckpt.begin_checkpoint(root_dir, state.step) if runtime.is_main else None,
                                      runtime)
    model_state, optim_state = get_state_dict(module, optimizer)
    # Collective: returns once every rank's shards and rank 0's metadata file are written.
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp / DCP_DIR))
    if not runtime.is_main:
        return None
    tokenizer.save_pretrained(tmp)
    return ckpt.commit_checkpoint(root_dir, tmp, ckpt.trainer_payload(None, scheduler, state, rng_per_rank),
                                  step=state.step, keep=keep)


def load_checkpoint(path: Path, module: torch.nn.Module, optimizer) -> None:
    """Every rank: load its shards of a checkpoint's model and optimizer state into the sharded `module`
    and `optimizer` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (Path(path) / DCP_DIR).is_dir():
        raise ValueError(f"{path} holds no sharded (FSDP) state: it was written with training.strategy ddp; "
                         "resume with that strategy or start this stage afresh (resume=False)")
    # The state dicts to load into: the optimizer's is initialised here, so every key exists to be filled.
    model_state, optim_state = get_state_dict(module, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(Path(path) / DCP_DIR))
    set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / DCP_DIR).is_dir()


def full_state_dict(module: torch.nn.Module, runtime: Runtime) -> dict[str, torch.Tensor]:
    """Every rank (collective): the causal LM's full, unsharded weights, on CPU, under its own names, on rank
    0; an empty dict on the others."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not runtime.is_main:
        return {}
    return {k.removeprefix(_ROOT_PREFIX): v for k, v in full.items()}
