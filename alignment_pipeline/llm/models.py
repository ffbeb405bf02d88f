"""What a model name means: `tiny:<name>` (built random-init tiny Llama), a packaged real model (see
packaged.py), or anything else, which goes to `from_pretrained` unchanged (a local path or a hub id)."""

from __future__ import annotations

import zlib
from pathlib import Path

from alignment_pipeline.llm.config import TINY_PREFIX


def resolve_model_path(model: str, models_dir: str | Path) -> str:
    """The directory or id to hand to `from_pretrained` for `model`; built models are built once."""
    from alignment_pipeline.llm.packaged import build_packaged_model, is_packaged
    from alignment_pipeline.llm.tiny import build_tiny_model

    if model.startswith(TINY_PREFIX):
        name = model[len(TINY_PREFIX):]
        # Seeded by name: differently named tiny models are different models (a world can mix them).
        return str(build_tiny_model(Path(models_dir) / name, seed=zlib.crc32(name.encode())))
    if is_packaged(model):
        return str(build_packaged_model(model, models_dir))
    return model
