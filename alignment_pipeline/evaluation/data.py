"""The benchmark files shipped in assets/benchmarks/ (provenance and licences: assets/benchmarks/SOURCES.md),
each checked against its sha256 before it is read: a changed file is refused, naming it.

An item's id everywhere (per-item results, judgements, comparisons) is its 0-based row index in its file:
the JSON list's index, the CSV's data row, the JSONL's line.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import json
import random
from pathlib import Path

from alignment_pipeline.paths import assets_dir

#: file -> (sha256, rows). The real splits are byte-exact copies of public files; mic_proxy's is ours.
SHIPPED: dict[str, tuple[str, int]] = {
    "truthfulqa_mc_task_v0.json": ("6eb4125d25750c0145c4be2dce00440736684ab6f74ce6bff2139571cc758954", 817),
    "ethics_commonsense_test.csv": ("a004f51b8f863d85eb5575d86e8723897f850fcb7fc8de38c1f30105dfb13c4d", 3885),
    "ethics_commonsense_test_hard.csv": ("896f8929284fd7f847413e929e5191e2c56e4f1ab0e5ce22f059541cfa33d494", 3964),
    "moral_stories_norm_distance_test.jsonl": (
        "ca762ec2baafafd0f75b386ed5dc3873757691fb699197f6437e618bc4979799", 1000),
    "hh_harmless_base_test.jsonl.gz": ("ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03", 2312),
    "hh_helpful_base_test.jsonl.gz": ("8be3fc1a13b27901631696f2be6f184c799f1baeaf145f53ac5db24960adc37b", 2354),
    "stable_alignment_hh_questions.txt": ("45bf36b1ebfdd9f47a7a35af70c01617d83080462c3e518f9d8407e6799480ef", 5022),
    "mic_proxy_rot_relevance.jsonl": ("d191799d8875702c1524e0bedd56657f5b6d9e9cae6805ed85a84d02ec408b9e", 32),
}


class BenchmarkDataError(RuntimeError):
    """A shipped benchmark file is missing or is not the file it was shipped as."""


def data_dir() -> Path:
    return assets_dir() / "benchmarks"


def verified_path(name: str, root: Path | None = None) -> Path:
    """The path of shipped file `name` after its sha256 matched; BenchmarkDataError naming the file if not."""
    if name not in SHIPPED:
        raise BenchmarkDataError(f"{name} is not a shipped benchmark file (known: {', '.join(sorted(SHIPPED))})")
    path = (root or data_dir()) / name
    if not path.is_file():
        raise BenchmarkDataError(f"benchmark file {path} is missing")
    stat = path.stat()
    digest = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
    if digest != SHIPPED[name][0]:
        raise BenchmarkDataError(f"benchmark file {path} has sha256 {digest}, expected {SHIPPED[name][0]}: it was "
                                 "changed; restore the shipped file (assets/benchmarks/SOURCES.md says where from)")
    return path


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache: an edit re-hashes
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_rows(name: str, root: Path | None = None) -> list[dict]:
    """Every row of a shipped file, in file order (row index = item id)."""
    return list(_read_rows(name, root, *_key(verified_path(name, root))))


def _key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _read_rows(name: str, root: Path | None, _size: int, _mtime: int) -> tuple[dict, ...]:
    path = (root or data_dir()) / name
    if name.endswith(".json"):
        return tuple(_truthfulqa_doc(d) for d in json.loads(path.read_text(encoding="utf-8")))
    if name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return tuple({"label": int(r["label"]), "input": r["input"], "is_short": r["is_short"] == "True",
                          "edited": r["edited"] == "True"} for r in csv.DictReader(f))
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return tuple(json.loads(line) for line in f if line.strip())
    if name.endswith(".jsonl"):
        return tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return tuple({"text": line} for line in path.read_text(encoding="utf-8").splitlines())


def _truthfulqa_doc(doc: dict) -> dict:
    """The v0 file's {answer: label} targets in the Hugging Face dataset's layout ({choices, labels}, file order:
    the correct answer first), which lm-eval's truthfulqa_mc1 reads."""
    out = {"question": doc["question"]}
    for key in ("mc1_targets", "mc2_targets"):
        out[key] = {"choices": list(doc[key]), "labels": list(doc[key].values())}
    return out


def sample_ids(task: str, ids: list[int], limit: int | None, seed: int) -> list[int]:
    """`limit` of `ids` drawn with a generator seeded by (seed, task), in ascending order: the same items for
    every checkpoint evaluated with the same settings; every id when limit is None or not smaller."""
    if limit is None or limit >= len(ids):
        return list(ids)
    return sorted(random.Random(f"{seed}:{task}").sample(list(ids), limit))
