"""Resumable training checkpoints: model, tokenizer, optimizer, scheduler, RNG and data position, written to a
temporary directory and renamed into place, so a kill at any moment leaves the previous checkpoint whole.

Each checkpoint carries a manifest of its files' sizes and SHA-256 sums. A checkpoint whose files no longer match
it (a disk error, a copy cut short, an edit by hand), or, written before manifests, whose trainer state does not
load, is named in a warning and set aside as `corrupt-step-NNNNNNNN`, and training resumes from the newest good
one before it instead of failing until someone deletes it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from alignment_pipeline.stopping import pid_alive

_NAME = re.compile(r"^step-(\d{8})$")
STATE_FILE = "trainer_state.pt"
MANIFEST_FILE = "manifest.json"
CORRUPT_PREFIX = "corrupt-"
log = logging.getLogger("alignment_pipeline.training")


@dataclass
class TrainState:
    """Where training stands. `consumed` logs every batch used by an optimizer step, as
    [step, epoch, batch_index, [group indices]]; `history` holds one metrics dict per step."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # the next batch of `epoch` to use
    tokens: int = 0
    train_seconds: float = 0.0
    mlflow_run_id: str | None = None
    fingerprint: str = ""  # of the objective, base model, data and `settings`: a resume must match it
    settings: dict = field(default_factory=dict)  # the settings that decide the result, to name what changed
    history: list[dict] = field(default_factory=list)
    consumed: list[list] = field(default_factory=list)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, model, tokenizer, optimizer, scheduler, state: TrainState, *, keep: int,
                    rng_per_rank: list[dict] | None = None) -> Path:
    """Write `root/step-NNNNNNNN` atomically; keep the newest `keep` checkpoints. Under DDP rank 0 alone
    writes (weights and optimizer state are identical on every rank); `rng_per_rank` carries every rank's
    RNG state, gathered to rank 0. (FSDP writes its sharded state itself: training/fsdp.py.)"""
    tmp = begin_checkpoint(root, state.step)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return commit_checkpoint(root, tmp, trainer_payload(optimizer, scheduler, state, rng_per_rank),
                             step=state.step, keep=keep)


def begin_checkpoint(root: Path, step: int) -> Path:
    """An empty temporary directory for the checkpoint of `step`, beside where it will be renamed to."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def trainer_payload(optimizer, scheduler, state: TrainState, rng_per_rank: list[dict] | None) -> dict:
    """The trainer's own state file: optimizer (None when it is saved sharded), scheduler, RNG, position."""
    payload = {"scheduler": scheduler.state_dict(), "rng": rng_state(), "state": asdict(state)}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if rng_per_rank is not None:
        payload["rng_per_rank"] = rng_per_rank
    return payload


def commit_checkpoint(root: Path, tmp: Path, payload: dict, *, step: int, keep: int) -> Path:
    """Write the trainer state into `tmp` (the file that makes a checkpoint complete), rename it into place
    and drop all but the newest `keep` checkpoints."""
    final = root / _name(step)
    torch.save(payload, tmp / STATE_FILE)
    (tmp / MANIFEST_FILE).write_text(json.dumps(_manifest(tmp), indent=1, sort_keys=True))
    _fsync_dir(tmp)
    if final.exists():  # the same step saved by an earlier attempt: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (half-written temporaries are never listed)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path, *, verify: bool = False) -> Path | None:
    """The newest complete checkpoint. `verify`: the newest one that is also intact (see `checkpoint_problem`);
    the corrupt ones newer than it are set aside (`set_aside`) with a warning naming each and why."""
    found = list_checkpoints(root)
    if not verify:
        return found[-1] if found else None
    for path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        moved = set_aside(path)
        log.warning("resume checkpoint %s is corrupt (%s): set aside as %s; resuming from the one before it",
                    path, problem, moved)
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be trusted, or None: a file missing, of another size or with another
    SHA-256 than its manifest says, or (no manifest) a trainer state that does not load."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        try:
            load_trainer_state(path)
        except Exception as exc:  # any load failure means unusable; the reason is reported, not raised
            return f"its {STATE_FILE} does not load: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return None
    try:
        expected = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return f"its {MANIFEST_FILE} is unreadable: {exc}"
    for name, (size, digest) in sorted(expected.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} is {file.stat().st_size} bytes, {size} expected"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def set_aside(path: Path) -> Path:
    """Rename a checkpoint to `corrupt-<name>` beside it (kept for a look, never listed again)."""
    target = path.with_name(f"{CORRUPT_PREFIX}{path.name}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{CORRUPT_PREFIX}{path.name}.{n}")
    os.replace(path, target)
    return target


# -- the output folder's lock -----------------------------------------------------------------------------------

LOCK_FILE = ".trainer.lock"


class OutputBusy(RuntimeError):
    """Another live trainer holds the output folder."""


def claim_output_dir(out_dir: Path) -> Path:
    """Take `out_dir/.trainer.lock` for this process (its pid and host inside), so two trainers never write one
    stage's checkpoints and model at once (a rerun racing a trainer a killed run left behind). A lock whose
    process is gone is stale and taken over; one this process holds is taken again. OutputBusy names a live
    holder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_FILE
    for _ in range(50):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is None:  # being written by its creator this moment, or left empty by a crash
                if time.time() - _mtime(lock) < 2.0:
                    time.sleep(0.05)
                    continue
            elif holder == (os.getpid(), socket.gethostname()):
                return lock
            elif holder[1] != socket.gethostname() or pid_alive(holder[0]):
                raise OutputBusy(f"{out_dir} is being trained by process {holder[0]} on {holder[1]} (lock {lock}); "
                                 "wait for it to finish, or stop it, before training this stage again") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        return lock
    raise OutputBusy(f"could not take the lock {lock}: it keeps changing hands")


def release_output_dir(lock: Path) -> None:
    """Drop the lock if this process still holds it."""
    if _lock_holder(lock) == (os.getpid(), socket.gethostname()):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _lock_holder(lock: Path) -> tuple[int, str] | None:
    try:
        data = json.loads(lock.read_text())
        return int(data["pid"]), str(data["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _manifest(directory: Path) -> dict[str, list]:
    return {str(file.relative_to(directory)): [file.stat().st_size, _sha256(file)]
            for file in sorted(directory.rglob("*")) if file.is_file() and file.name != MANIFEST_FILE}


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def clean_temporaries(root: Path) -> None:
    if root.is_dir():
        for p in root.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def rng_for_rank(saved: dict, rank: int, world_size: int) -> dict:
    """The RNG state a rank resumes with: its own when the checkpoint was written by as many ranks, else rank
    0's (the world size changed, so per-rank streams cannot continue anyway)."""
    per_rank = saved.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == world_size:
        return per_rank[rank]
    return saved["rng"]


def load_trainer_state(path: Path) -> dict:
    # weights_only=False: the file holds RNG states (numpy arrays, tuples) written by this module.
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


#: the final Hugging Face checkpoint's directory under a stage's out_dir
MODEL_DIR = "model"


def save_final_model(model, tokenizer, out_dir: Path, *, state_dict: dict | None = None,
                     finish: Callable[[Path], None] | None = None) -> Path:
    """Write `out_dir/model` (weights + tokenizer) through a temporary directory, so a crash never leaves a half
    written model where the next stage or the benchmarks look. `finish(tmp)` edits the files before they move in;
    `state_dict`: full weights gathered from FSDP shards."""
    final = out_dir / MODEL_DIR
    tmp = out_dir / f".tmp-{MODEL_DIR}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    if finish is not None:
        finish(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final

