"""Which LLM backs an agent, observer or judge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# A model name starting with this prefix means: the random-init tiny Llama the project builds
# offline under $ALIGNMENT_HOME/models/<name> (see llm/tiny.py).
TINY_PREFIX = "tiny:"
# The real instruct model that ships in a Python package (llm/packaged.py): the `small` profile's every role.
SMOLLM2 = "smollm2-135m-instruct"


class BackendSpec(BaseModel):
    kind: Literal["hf", "openai", "scripted"] = "hf"
    model: str = "tiny:tiny-llama"
    # openai: any OpenAI-compatible server (vLLM, OpenAI, Ollama).
    base_url: str | None = None
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 5
    # hf: local transformers model.
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = 32
    max_input_tokens: int = 2048
