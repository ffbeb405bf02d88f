"""Which LLM backs an agent, observer or judge."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from alignment_pipeline.strict import StrictModel

# A model name starting with this prefix means: the random-init tiny Llama the project builds
# offline under $ALIGNMENT_HOME/models/<name> (see llm/tiny.py).
TINY_PREFIX = "tiny:"
# The real instruct model that ships in a Python package (llm/packaged.py): the `small` profile's every role.
SMOLLM2 = "smollm2-135m-instruct"


def missing_local_model(name: str) -> str | None:
    """The problem with a model name that is plainly a local path (absolute, ./, ../, ~) but names no directory;
    hub ids and the project's own names are left to `from_pretrained` and the builders."""
    if not name.startswith(("/", "./", "../", "~")):
        return None
    path = Path(name).expanduser()
    return None if path.is_dir() else f"model directory {path} does not exist"


class BackendSpec(StrictModel):
    kind: Literal["hf", "openai", "scripted"] = "hf"
    model: str = "tiny:tiny-llama"
    # openai: any OpenAI-compatible server (vLLM, OpenAI, Ollama).
    base_url: str | None = None
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    # hf: local transformers model.
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(32, ge=1)
    max_input_tokens: int = Field(2048, ge=1)

    @model_validator(mode="after")
    def _local_model_exists(self) -> BackendSpec:
        problem = missing_local_model(self.model) if self.kind == "hf" else None
        if problem:
            raise ValueError(f"model: {problem}")
        return self
