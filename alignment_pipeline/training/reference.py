"""Reference log-probs (DPO, SPPO), computed once before training and stored next to the run.

The reference model never has to sit in memory beside the policy: one no-grad pass over the data gives the
summed log-prob of every response, cached in a file keyed by a fingerprint of the model and the token ids,
so a resumed run reads it back instead of recomputing it (or, worse, recomputing it from trained weights).
Under torchrun every rank computes a share of the groups (`shard_groups`) and the shares are gathered
(`merge_shards`), so no rank idles in a collective while another runs the whole pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path

import torch

from alignment_pipeline.training.data import TokenizedGroup
from alignment_pipeline.training.forward import pack_groups, response_logps


def fingerprint(model_path: str, groups: list[TokenizedGroup]) -> str:
    digest = hashlib.sha256(model_path.encode())
    weights = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    for file in weights:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for g in groups:
        digest.update(json.dumps([g.index, g.prompt_ids, g.response_ids]).encode())
    return digest.hexdigest()


@torch.no_grad()
def compute_reference_logps(model, groups: list[TokenizedGroup], *, pad_id: int, device: torch.device,
                            batch_size: int, autocast=None, chunk_size: int = 1024,
                            n_rows: int | None = None) -> torch.Tensor:
    """Summed response log-probs under `model`: float32 [n_rows (default len(groups)), K_max], NaN where a
    group has fewer responses (or is not among `groups`). Row i belongs to the group with `index == i`."""
    k_max = max((len(g.response_ids) for g in groups), default=0)
    out = torch.full((len(groups) if n_rows is None else n_rows, k_max), float("nan"))
    was_training = model.training
    model.eval()
    ordered = sorted(groups, key=lambda g: g.packed_length)  # length-sorted: least padding
    try:
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start:start + batch_size]
            batch = pack_groups(chunk, pad_id).to(device)
            with autocast() if autocast else nullcontext():
                lp = response_logps(model, batch, chunk_size=chunk_size)
            sums = torch.where(lp.response_mask, lp.logp_sum, float("nan")).cpu()
            for row, g in enumerate(chunk):
                out[g.index, :sums.shape[1]] = sums[row]
    finally:
        model.train(was_training)
    return out


def shard_groups(groups: list[TokenizedGroup], rank: int, world_size: int) -> list[TokenizedGroup]:
    """This rank's share of the reference pass: the groups sorted by length and dealt out in turn, so every
    rank gets about as many tokens."""
    return sorted(groups, key=lambda g: (g.packed_length, g.index))[rank::world_size]


def merge_shards(shards: list[tuple[list[int], torch.Tensor]], n_rows: int,
                 expected_rows: list[int] | None = None) -> torch.Tensor:
    """One [n_rows, K_max] tensor from every rank's (group indices, their rows); each of `expected_rows` (default:
    all)
    must come from exactly one shard, and no other row from any."""
    k_max = max((rows.shape[1] for _, rows in shards), default=0)
    out = torch.full((n_rows, k_max), float("nan"))
    seen = torch.zeros(n_rows, dtype=torch.long)
    for indices, rows in shards:
        out[indices, :rows.shape[1]] = rows
        seen.index_add_(0, torch.tensor(indices, dtype=torch.long), torch.ones(len(indices), dtype=torch.long))
    expected = torch.zeros(n_rows, dtype=torch.long)
    expected[torch.arange(n_rows) if expected_rows is None else torch.tensor(expected_rows, dtype=torch.long)] = 1
    if not bool((seen == expected).all()):
        raise ValueError(f"reference shards cover {int(((seen == 1) & (expected == 1)).sum())} of "
                         f"{int(expected.sum())} groups exactly once")
    return out


def read_cache(cache: Path, key: str) -> torch.Tensor | None:
    """The cached tensor when it exists and its fingerprint matches `key`."""
    if cache.exists():
        stored = torch.load(cache, map_location="cpu", weights_only=True)
        if stored.get("fingerprint") == key:
            return stored["logps"]
    return None


def write_cache(cache: Path, key: str, logps: torch.Tensor) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"fingerprint": key, "logps": logps}, tmp)
    os.replace(tmp, cache)
