"""Where models run and in which floating-point type: the one reading of "auto" that training, local
inference, lm-eval and the embedding model share."""

from __future__ import annotations

import os

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "fp32": torch.float32, "bf16": torch.bfloat16}


def local_rank() -> int:
    """This process's GPU slot on its node: torchrun's LOCAL_RANK, 0 when started alone."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(device: str = "auto") -> torch.device:
    """`auto`: this process's GPU when CUDA is present, else the CPU. A bare `cuda` (or `auto`) means this
    process's GPU, LOCAL_RANK's under torchrun, so each process gets its own; anything else is handed to torch
    as is."""
    if device == "auto":
        return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank())
    return dev


def resolve_dtype(dtype: str, device: torch.device, *, half: torch.dtype = torch.float16) -> torch.dtype:
    """`auto`: bfloat16 on a CUDA device that supports it, else `half` on CUDA (training passes float32:
    float16 without loss scaling under- and overflows), float32 elsewhere. Explicit names: float32, bfloat16,
    float16, or fp32/bf16."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else half
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    resolved = _DTYPES[dtype]
    if resolved == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{dtype} asked for, but {torch.cuda.get_device_name(device)} lacks bf16")
    return resolved
