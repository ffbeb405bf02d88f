"""Which LLM backs an agent, observer or judge."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from alignment_pipeline.strict import StrictModel

# A model name starting with this prefix means: the random-init tiny Llama the project builds
# offline under $ALIGNMENT_HOME/models/<name> (see llm/tiny.py).
TINY_PREFIX = "tiny:"
# The real instruct model that ships in a Python package (llm/packaged.py): the `small` profile's every role.
SMOLLM2 = "smollm2-135m-instruct"


_TINY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "*.gguf")


def model_reference_problem(name: str) -> str | None:
    """What is wrong with a model reference, said when settings load instead of deep inside a run: an empty name,
    a `tiny:` name that cannot be a directory name, a local directory (a path, or an existing folder) that is
    missing or lacks a config, a tokenizer or weights, or a string that is no well-formed hub id. None: it is
    one of the project's names, a complete local directory or a well-formed hub id (whether the hub or a cache
    has it is known only when it loads)."""
    from alignment_pipeline.llm.packaged import is_packaged

    if not name.strip():
        return "empty model name"
    if name.startswith(TINY_PREFIX):
        tiny = name[len(TINY_PREFIX):]
        return None if _TINY_NAME.match(tiny) else (
            f"{name!r}: a tiny model's name after {TINY_PREFIX!r} must be letters, digits, '.', '_' or '-'")
    if is_packaged(name):
        return None
    path = Path(name).expanduser()
    if name.startswith(("/", "./", "../", "~")) or path.is_dir():
        return _model_directory_problem(path)
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        return (f"{name!r} is no local directory, no project model ({TINY_PREFIX}<name>, {SMOLLM2}) and no "
                f"well-formed hub id: {' '.join(str(exc).split())}")
    return None


def _model_directory_problem(path: Path) -> str | None:
    if not path.is_dir():
        return f"model directory {path} does not exist"
    lacks = [what for what, present in (
        ("config.json", (path / "config.json").is_file()),
        (f"tokenizer ({', '.join(_TOKENIZER_FILES)})", any((path / f).is_file() for f in _TOKENIZER_FILES)),
        (f"weights ({', '.join(_WEIGHT_PATTERNS)})", any(any(path.glob(p)) for p in _WEIGHT_PATTERNS)),
    ) if not present]
    return f"model directory {path} has no {' and no '.join(lacks)}" if lacks else None


class BackendSpec(StrictModel):
    """One LLM: how it is reached and which model it is."""

    # Which model.
    kind: Literal["hf", "openai", "scripted"] = Field(
        "hf", description="hf: a local transformers model; openai: an OpenAI-compatible chat server (vLLM, "
        "llama.cpp, Ollama, OpenAI); scripted: canned replies for tests")
    model: str = Field(
        "tiny:tiny-llama", description="hub id, local directory, 'tiny:<name>' (a random tiny Llama built "
        f"offline) or '{SMOLLM2}' (the packaged real model); for openai, the server's model name")

    # openai: any OpenAI-compatible server.
    base_url: str | None = Field(None, description="server root up to /v1 (openai only; required there)")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once (openai)")
    timeout_s: float = Field(60.0, gt=0, description="seconds one request may take (openai)")
    max_retries: int = Field(5, ge=0, description="retries of a timed-out, 429 or 5xx request (openai)")

    # hf: local transformers model.
    device: str = Field("auto", description="torch device (hf); auto: this process's GPU if any, else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype (hf); auto: bfloat16 on a GPU that has it, else float16 on GPU, "
        "float32 on cpu")
    batch_size: int = Field(32, ge=1, description="prompts generated together (hf)")
    max_input_tokens: int = Field(2048, ge=1, description="prompt tokens kept, cut from the left (hf)")

    @model_validator(mode="after")
    def _loadable_model(self) -> BackendSpec:
        # openai and scripted models are names on a server or in a test: only hf models load here.
        problem = model_reference_problem(self.model) if self.kind == "hf" else None
        if problem:
            raise ValueError(f"model: {problem}")
        return self
