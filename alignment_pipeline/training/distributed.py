"""Multi-process training under torchrun (DDP): the process group, rank-0-first sections and cross-rank
reductions. Every helper is a no-op with one process, so the single-process path runs the same code.

FSDP (training/fsdp.py) runs on the same helpers: its forward and backward are collectives, so every rank
runs the same number of micro-steps (`micro_steps(..., lockstep=True)`).

Batch arithmetic: each rank runs `per_device_batch` prompts per micro-batch and `grad_accum` micro-batches per
optimizer step, so one step consumes per_device_batch × grad_accum × world_size prompts (nothing is rescaled to
hide the world size: the learning rate and schedule see that effective batch).
"""

from __future__ import annotations

import atexit
import inspect
import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from alignment_pipeline.training.runtime import Runtime


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: from the process group when one is up, else torchrun's RANK (0 alone)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def init_process_group(runtime: Runtime, *, keep: bool = False, timeout_s: float | None = None) -> bool:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU) unless this process is alone or already in
    one. Returns True when this call created the group (the caller then destroys it). `keep`: leave the group
    up until the process exits, for later calls to reuse: re-creating the default group after destroying it
    can hang under torchrun (its rendezvous store still holds the old group's keys). `timeout_s`: how long a
    collective waits for the other ranks (training.distributed_timeout_s) before it fails, rather than
    torch's default, which differs by backend and release."""
    if runtime.world_size <= 1:
        return False
    if dist.is_initialized():
        if dist.get_world_size() != runtime.world_size or dist.get_rank() != runtime.rank:
            raise RuntimeError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, but "
                               f"RANK/WORLD_SIZE say {runtime.rank} of {runtime.world_size}")
        return False
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={runtime.world_size} but {', '.join(missing)} unset: start multi-process "
                           "training with torchrun (python -m torch.distributed.run)")
    timeout = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
    if runtime.cuda:
        dist.init_process_group("nccl", rank=runtime.rank, world_size=runtime.world_size, device_id=runtime.device,
                                **timeout)
    else:
        dist.init_process_group("gloo", rank=runtime.rank, world_size=runtime.world_size, **timeout)
    if keep:
        atexit.register(destroy_process_group)
    return True


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if not active():
        return
    if runtime.cuda:
        dist.barrier(device_ids=[runtime.device.index])
    else:
        dist.barrier()


@contextmanager
def main_first(runtime: Runtime) -> Iterator[None]:
    """Rank 0 runs the block first (it may write files, e.g. build a model or a cache), the others run it
    after rank 0 has finished it (and then find those files complete)."""
    if not runtime.is_main:
        barrier(runtime)
    yield
    if runtime.is_main:
        barrier(runtime)


def broadcast_object(obj, runtime: Runtime):
    """Rank 0's `obj` on every rank (pickled; for small things: paths, prompt groups)."""
    if not active():
        return obj
    box = [obj if runtime.is_main else None]
    dist.broadcast_object_list(box, src=0, device=runtime.device if runtime.cuda else None)
    return box[0]


def gather_to_main(obj, runtime: Runtime) -> list | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere); `[obj]` with one process."""
    if not active():
        return [obj]
    out = [None] * runtime.world_size if runtime.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather(obj, runtime: Runtime) -> list:
    """Every rank's `obj` (pickled), in rank order, on every rank; `[obj]` with one process."""
    if not active():
        return [obj]
    out = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce(values: list[float], runtime: Runtime, *, op: str = "sum") -> list[float]:
    """Element-wise sum (or max) of a list of floats over all ranks, in float64 (token counts stay exact)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def wrap_ddp(module: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """`module` in DistributedDataParallel. Buffers are not re-broadcast every forward: the models' buffers
    (rotary frequencies) are constants, and a per-forward broadcast would force every rank to run the same
    number of forwards per step."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [runtime.device.index] if runtime.cuda else None
    # Newer torch renamed the switch (the old name warns); older releases only have the old one.
    no_sync = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(module, device_ids=device_ids, **no_sync)


@dataclass(frozen=True)
class MicroStep:
    index: int  # the batch's position in the optimizer step's window
    weight: float  # its share of the window's prompts, all ranks together; 0 for a placeholder
    loss_scale: float  # multiplies its loss before backward: weight × world size, as DDP averages over ranks
    sync: bool  # this rank's last backward of the step: DDP all-reduces the accumulated gradients in it
    placeholder: bool = False  # run only so that this rank joins the all-reduce; counted nowhere


def micro_steps(prompts_per_batch: list[int], runtime: Runtime, *, lockstep: bool = False) -> list[MicroStep]:
    """This rank's part of one optimizer step over a window of batches holding `prompts_per_batch` prompts.

    With W ranks, rank r runs batches r, r+W, ... of the window, so the step's gradient is the prompt-weighted
    mean over the whole window, as one process accumulating every batch of it would compute. A rank with no
    batch in an epoch's last, short window still joins the all-reduce: it runs the window's first batch with
    weight zero. `lockstep` (FSDP, whose every forward gathers parameters from all ranks): every rank runs as
    many micro-steps as the busiest one, the missing ones as such zero-weight passes."""
    world = runtime.world_size
    n_total = sum(prompts_per_batch)
    mine = [(j, False) for j in range(runtime.rank, len(prompts_per_batch), world)] or [(0, True)]
    if lockstep:
        mine = [m for m in mine if not m[1]]
        mine += [(0, True)] * (math.ceil(len(prompts_per_batch) / world) - len(mine))
    out = []
    for n, (j, placeholder) in enumerate(mine):
        weight = 0.0 if placeholder else prompts_per_batch[j] / n_total
        out.append(MicroStep(j, weight, weight * world, sync=n == len(mine) - 1, placeholder=placeholder))
    return out


def gradient_sync(model: torch.nn.Module, sync: bool) -> AbstractContextManager:
    """Around a micro-step's forward and backward: DDP all-reduces gradients only when `sync`; the other
    backwards accumulate locally (a plain model always does)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.no_sync() if isinstance(model, DistributedDataParallel) and not sync else nullcontext()


@dataclass
class StepSums:
    """What one optimizer step's micro-steps add up: prompt-weighted metric means, token counts and the
    micro-steps whose loss was not finite; on this rank (`add`), then over all ranks (`reduce`)."""

    world_size: int
    metrics: dict[str, float] = field(default_factory=dict)
    data_tokens: int = 0
    packed_tokens: int = 0
    scored_tokens: int = 0
    bad: list[str] = field(default_factory=list)  # this rank's non-finite micro-steps, described
    n_bad: int = 0  # over all ranks, once reduced

    def add(self, micro: MicroStep, metrics: dict, *, loss: float, data_tokens: int, packed_tokens: int,
            scored_tokens: int, where: str) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not micro.placeholder and math.isfinite(value):
                    self.metrics[key] = self.metrics.get(key, 0.0) + value * micro.weight
                elif self.world_size > 1:
                    self.metrics.setdefault(key, 0.0)  # the same keys on every rank (fixed per objective)
        if micro.placeholder:
            return
        if not math.isfinite(loss):
            self.bad.append(where)
        self.data_tokens += data_tokens
        self.packed_tokens += packed_tokens
        self.scored_tokens += scored_tokens

    def reduce(self, runtime: Runtime) -> StepSums:
        """The sums over all ranks (this rank's `bad` kept, to say where)."""
        if runtime.world_size <= 1:
            return StepSums(1, dict(self.metrics), self.data_tokens, self.packed_tokens, self.scored_tokens,
                            list(self.bad), len(self.bad))
        keys = sorted(self.metrics)
        totals = all_reduce([self.data_tokens, self.packed_tokens, self.scored_tokens, len(self.bad)]
                            + [self.metrics[k] for k in keys], runtime)
        data_tokens, packed_tokens, scored_tokens, n_bad = (int(v) for v in totals[:4])
        return StepSums(runtime.world_size, dict(zip(keys, totals[4:], strict=True)), data_tokens, packed_tokens,
                        scored_tokens, list(self.bad), n_bad)
