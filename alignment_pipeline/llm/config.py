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
    def _local_model_exists(self) -> BackendSpec:
        problem = missing_local_model(self.model) if self.kind == "hf" else None
        if problem:
            raise ValueError(f"model: {problem}")
        return self
