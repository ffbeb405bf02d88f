"""Device, precision and throughput accounting for training (CUDA first; CPU works the same way)."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from alignment_pipeline.devices import local_rank, resolve_device, resolve_dtype

# Dense bf16 peak of common accelerators (TFLOP/s), for MFU when the config gives none.
_PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("L40", 181.0), ("A10", 125.0),
                ("L4", 121.0), ("4090", 165.0))


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


def peak_tflops(runtime: Runtime, configured: float | None) -> float | None:
    if configured:
        return configured
    if not runtime.cuda:
        return None
    name = torch.cuda.get_device_name(runtime.device)
    return next((tf for key, tf in _PEAK_TFLOPS if key in name), None)


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


def flop_params(model) -> tuple[int, int]:
    """(parameters every position runs through, LM-head parameters): input embeddings are lookups, not
    matmuls, and the LM head runs only at response positions here."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    embed = sum(p.numel() for p in inner.get_input_embeddings().parameters())
    head = sum(p.numel() for p in inner.get_output_embeddings().parameters())
    return sum(p.numel() for p in inner.parameters()) - embed - head, head


def training_flops(body_params: int, head_params: int, tokens: int, scored_tokens: int) -> float:
    """Model FLOPs of forward + backward, 6 per parameter per token (attention-score FLOPs left out, so MFU
    is slightly understated; recomputation is not counted as useful work)."""
    return 6.0 * (body_params * tokens + head_params * scored_tokens)


def synchronize(runtime: Runtime) -> None:
    if runtime.cuda:
        torch.cuda.synchronize(runtime.device)
