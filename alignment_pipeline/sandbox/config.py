from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from alignment_pipeline.llm.config import SMOLLM2, BackendSpec
from alignment_pipeline.paths import assets_dir
from alignment_pipeline.strict import StrictModel

# Fields that do not change what a world is: a rerun with more rounds continues the same world.
_NOT_WORLD_DEFINING = frozenset({"rounds"})


class SandboxConfig(StrictModel):
    size: int = 3  # grid side: size*size agents
    radius: float | None = None  # social circle; None means size // 2
    rounds: int = 2
    neighbours: int = 4
    init_setting: Literal["all_good", "all_bad", "half_half", "mixed_half_half"] = "mixed_half_half"
    seed: int = 0
    # A world may mix models: agent i is backed by agent_models[i % len(agent_models)].
    # smoke: two differently initialised tiny models, so even the demo's data comes from a mixed society.
    agent_models: list[BackendSpec] = Field(
        default_factory=lambda: [BackendSpec(), BackendSpec(model="tiny:tiny-llama-b")])
    observer: BackendSpec = Field(default_factory=BackendSpec)
    memory_top_n: int = 1
    # Cosine similarity a past question needs to be recalled. The original's 0.3 cosine distance (0.7) was
    # for ada-002, whose similarities crowd near 1; with all-MiniLM-L6-v2 paraphrases score about 0.5-0.9
    # and unrelated questions below 0.4, so 0.5 is the comparable bar.
    memory_min_similarity: float = 0.5
    embedding_model: str = "all-MiniLM-L6-v2"  # this name (or a path) loads offline; see sandbox/embedding.py
    embedding_device: str = "auto"
    prior_memories: str | None = None  # default: assets/memories/prior_memories.jsonl
    prior_memories_per_agent: int | None = None  # None: every prior pair matching the agent's stance
    max_new_tokens: int = 48
    temperature: float = 1.0
    rating_retries: int = 2  # re-asks of an unparseable rating before it is stored as NULL with a reason
    empty_retries: int = 1  # re-asks of an empty draft or revision before it is stored as it is
    # The blocking `outputs_clean` check fails a batch whose share of clean drafts and revisions is lower.
    min_clean_share: float = Field(0.95, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _valid(self) -> SandboxConfig:
        problems = []
        if self.size < 2:
            problems.append(f"size must be >= 2 (a world needs neighbours), got {self.size}")
        if self.radius is not None and self.radius < 1:
            problems.append(f"radius must be >= 1 (else no agent has a neighbour), got {self.radius}")
        if self.rounds < 0:
            problems.append(f"rounds must be >= 0, got {self.rounds}")
        if self.neighbours < 1:
            problems.append(f"neighbours must be >= 1, got {self.neighbours}")
        if not self.agent_models:
            problems.append("agent_models must name at least one backend")
        if self.memory_top_n < 0:
            problems.append(f"memory_top_n must be >= 0, got {self.memory_top_n}")
        if not -1.0 <= self.memory_min_similarity <= 1.0:
            problems.append(f"memory_min_similarity is a cosine similarity in [-1, 1], got {self.memory_min_similarity}")
        if self.prior_memories_per_agent is not None and self.prior_memories_per_agent < 0:
            problems.append(f"prior_memories_per_agent must be >= 0, got {self.prior_memories_per_agent}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.rating_retries < 0 or self.empty_retries < 0:
            problems.append("rating_retries and empty_retries must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def agents(self) -> int:
        return self.size * self.size

    @property
    def circle_radius(self) -> float:
        return float(self.radius) if self.radius is not None else float(self.size // 2)

    def prior_memories_path(self) -> Path:
        return Path(self.prior_memories).expanduser() if self.prior_memories else (
            assets_dir() / "memories" / "prior_memories.jsonl")

    def world_hash(self) -> str:
        """Short hash of every world-defining setting (all but `rounds`), so the same config finds its world."""
        data = self.model_dump(mode="json", exclude=set(_NOT_WORLD_DEFINING))
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    def world_id(self, batch: str) -> str:
        return f"{batch}#{self.world_hash()}"

    @classmethod
    def profile(cls, name: str) -> SandboxConfig:
        if name == "paper":
            server = dict(kind="openai", base_url="http://localhost:8000/v1")
            return cls(
                size=10, rounds=10, neighbours=4, init_setting="mixed_half_half",
                agent_models=[BackendSpec(model=m, **server) for m in (
                    "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3")],
                observer=BackendSpec(model="Qwen/Qwen2.5-7B-Instruct", **server),
                memory_top_n=1, memory_min_similarity=0.5, max_new_tokens=256, temperature=1.0,
            )
        if name == "small":
            real = BackendSpec(model=SMOLLM2)
            # 0.7, not the paper's 1.0: a 135M model sampled at 1.0 drifts off topic within a sentence.
            return cls(size=3, rounds=1, neighbours=2, agent_models=[real], observer=real, max_new_tokens=64,
                       temperature=0.7)
        return cls()
