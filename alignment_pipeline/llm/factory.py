"""Build backends from specs. Models are loaded once per process and shared by every agent that uses them."""

from __future__ import annotations

import threading
from pathlib import Path

from alignment_pipeline.llm.base import LLMBackend
from alignment_pipeline.llm.config import BackendSpec

_cache: dict[tuple, LLMBackend] = {}
_lock = threading.Lock()


def make_backend(spec: BackendSpec, *, models_dir: str | Path) -> LLMBackend:
    """The backend a spec names; one instance per distinct spec in this process."""
    key = (spec.model_dump_json(), str(models_dir))
    with _lock:
        if key not in _cache:
            _cache[key] = _build(spec, Path(models_dir))
        return _cache[key]


def _build(spec: BackendSpec, models_dir: Path) -> LLMBackend:
    if spec.kind == "hf":
        from alignment_pipeline.llm.hf import HFBackend
        from alignment_pipeline.llm.models import resolve_model_path

        return HFBackend(resolve_model_path(spec.model, models_dir), device=spec.device, dtype=spec.dtype,
                         batch_size=spec.batch_size, max_input_tokens=spec.max_input_tokens,
                         model_name=spec.model)
    if spec.kind == "openai":
        from alignment_pipeline.llm.openai_compat import OpenAIBackend

        if not spec.base_url:
            raise ValueError(f"openai backend for {spec.model!r} needs base_url")
        return OpenAIBackend(spec.model, base_url=spec.base_url, api_key_env=spec.api_key_env,
                             max_concurrency=spec.max_concurrency, timeout_s=spec.timeout_s,
                             max_retries=spec.max_retries)
    if spec.kind == "scripted":
        from alignment_pipeline.llm.scripted import ScriptedLLM

        return ScriptedLLM(model_name=spec.model)
    raise ValueError(f"unknown backend kind {spec.kind!r}")


def clear_cache() -> None:
    with _lock:
        for backend in _cache.values():
            backend.close()
        _cache.clear()
