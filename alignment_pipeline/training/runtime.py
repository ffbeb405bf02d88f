"""Device, precision and throughput accounting for training (CUDA first; CPU works the same way)."""

from __future__ import annotations

import logging
import os
import re
import resource
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch

from alignment_pipeline.devices import local_rank, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

# Dense bf16 peak (TFLOP/s, NVIDIA's data sheets) by the exact name torch.cuda.get_device_name() reports, for
# MFU when training.peak_tflops gives none. Form factors differ (an H100 PCIe is 756, not the SXM's 989), so a
# name matches one pattern in full or none.
_PEAK_TFLOPS = (
    (r"NVIDIA H100 80GB HBM3", 989.4),  # SXM5
    (r"NVIDIA H100 PCIe", 756.0),
    (r"NVIDIA H100 NVL", 835.0),
    (r"NVIDIA H200", 989.4),  # SXM
    (r"NVIDIA H200 NVL", 835.0),
    (r"NVIDIA GH200 .*", 989.4),
    (r"NVIDIA A100[- ](SXM4-)?(40|80)GB( PCIe)?|NVIDIA A100-PCIE-(40|80)GB", 312.0),
    (r"NVIDIA L40S", 362.0),
    (r"NVIDIA L40", 181.0),
    (r"NVIDIA A10", 125.0),
    (r"NVIDIA L4", 121.0),
    (r"NVIDIA GeForce RTX 4090", 165.2),
)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def autocast_factory(self) -> Callable[[], AbstractContextManager] | None:
        return self.autocast if self.bf16 else None


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Pick the device (LOCAL_RANK's GPU under torchrun) and precision; enable TF32 on CUDA."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; choose auto, bf16 or fp32")
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {dev} (LOCAL_RANK {local_rank()}) but {torch.cuda.device_count()} CUDA "
                             "device(s) visible: training.nproc_per_node must not exceed the GPU count")
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # bf16 autocast or none: float16 would need loss scaling, so "auto" falls back to float32
    bf16 = resolve_dtype(precision, dev, half=torch.float32) == torch.bfloat16
    return Runtime(device=dev, bf16=bf16, rank=int(os.environ.get("RANK", "0")),
                   world_size=int(os.environ.get("WORLD_SIZE", "1")))


def peak_tflops_for(name: str) -> float | None:
    """The dense bf16 peak of the accelerator torch calls `name`; None (with a warning) for a name not in the
    table: MFU is then left out unless training.peak_tflops is set."""
    found = next((tf for pattern, tf in _PEAK_TFLOPS if re.fullmatch(pattern, name.strip())), None)
    if found is None:
        log.warning("no peak FLOP/s known for %r: MFU is not reported; set training.peak_tflops to report it", name)
    return found


def peak_tflops(runtime: Runtime, configured: float | None) -> float | None:
    if configured:
        return configured
    if not runtime.cuda:
        return None
    return peak_tflops_for(torch.cuda.get_device_name(runtime.device))


def reset_peak_memory(runtime: Runtime) -> None:
    if runtime.cuda:
        torch.cuda.reset_peak_memory_stats(runtime.device)


def peak_memory_mb(runtime: Runtime) -> float:
    """CUDA: peak allocated by torch since the last reset. CPU: the process's resident-set high-water mark
    (covers torch's allocations, which Python-level tracers do not see)."""
    if runtime.cuda:
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


class ParamCount(NamedTuple):
    trainable: int
    frozen: int


def flop_params(model) -> tuple[ParamCount, ParamCount]:
    """(parameters every position runs through, LM-head parameters), each split into trainable and frozen.
    Input embeddings are lookups, not matmuls, and the LM head runs only at response positions here. Each
    tensor counts once: a head tied to the input embeddings is the head (a matmul), not a second copy."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head_ids = {id(p) for p in inner.get_output_embeddings().parameters()}
    embed_ids = {id(p) for p in inner.get_input_embeddings().parameters()} - head_ids
    body, head = [0, 0], [0, 0]
    for p in inner.parameters():  # shared tensors are yielded once
        if id(p) in embed_ids:
            continue
        (head if id(p) in head_ids else body)[0 if p.requires_grad else 1] += p.numel()
    return ParamCount(*body), ParamCount(*head)


def training_flops(body_params: ParamCount | int, head_params: ParamCount | int, tokens: int,
                   scored_tokens: int) -> float:
    """Model FLOPs of forward + backward per token: 2 per parameter forward, 2 backward through the
    activations, and 2 more for the weight gradient of trainable parameters only (6N trained, 4N frozen, as
    the LoRA-frozen base). An int counts as all trainable. Attention-score FLOPs are left out, so MFU is
    slightly understated; recomputation is not counted as useful work."""
    def per_token(n: ParamCount | int) -> float:
        n = n if isinstance(n, ParamCount) else ParamCount(n, 0)
        return 6.0 * n.trainable + 4.0 * n.frozen

    return per_token(body_params) * tokens + per_token(head_params) * scored_tokens


def synchronize(runtime: Runtime) -> None:
    if runtime.cuda:
        torch.cuda.synchronize(runtime.device)
