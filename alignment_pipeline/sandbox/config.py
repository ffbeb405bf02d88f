from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.paths import assets_dir
from alignment_pipeline.strict import StrictModel

# Fields that do not change what a world is: a rerun with more rounds continues the same world.
_NOT_WORLD_DEFINING = frozenset({"rounds"})


class SandboxConfig(StrictModel):
    """The simulated society: its grid, its models, their memory and how they generate."""

    # The world.
    size: int = Field(3, ge=2, description="grid side: size × size agents (a world needs neighbours)")
    radius: float | None = Field(None, ge=1, description="social circle: every agent within this Euclidean grid "
                                 "distance; null: size // 2")
    rounds: int = Field(2, ge=0, description="Back-Scatter rounds; in each, every agent drafts an answer, gets "
                        "rated feedback from neighbours and revises (more rounds continue the same world)")
    neighbours: int = Field(4, ge=1, description="neighbours drawn from the social circle to give feedback on "
                            "each draft (fewer when the circle is smaller)")
    init_setting: Literal["all_good", "all_bad", "half_half", "mixed_half_half"] = Field(
        "mixed_half_half", description="initial stances: all good, all bad, two contiguous camps, or the same "
        "halves scattered over the grid by the seed")
    seed: int = Field(0, description="seeds stances, neighbour draws, prior-memory draws and sampling")

    # The models. A world may mix them: agent i is backed by agent_models[i % len(agent_models)].
    # The default is two differently initialised tiny models, so even test data comes from a mixed society.
    agent_models: list[BackendSpec] = Field(
        default_factory=lambda: [BackendSpec(), BackendSpec(model="tiny:tiny-llama-b")], min_length=1,
        description="backends of the agents, assigned round-robin by agent id")
    observer: BackendSpec = Field(default_factory=BackendSpec,
                                  description="memoryless model rating every draft and revision (1..7)")
    observer_replies: Literal["sampled", "scale"] = Field(
        "sampled", description="sampled: the observer writes 'Rating: N' and a reason, parsed (the paper's way); "
        "scale: N drawn from the observer's own probabilities of ' 1'..' 7' after 'Rating:' at the sampling "
        "temperature, one forward pass and no reason (about ten times cheaper; needs a backend with log-probs)")
    chat_prior_models: list[str] = Field(
        default_factory=list, description="agent models (their `model` names) whose system message starts with "
        "the original's chat prior (no warnings, no moralising: sandbox/templates.py CHAT_PRIOR), as the original "
        "gave its chat agents and not its completion agents")

    # Memory.
    memory_top_n: int = Field(1, ge=0, description="past interactions recalled into each draft and feedback prompt")
    # The original's 0.3 cosine distance (0.7) was for ada-002, whose similarities crowd near 1; with
    # all-MiniLM-L6-v2 paraphrases score about 0.5-0.9 and unrelated questions below 0.4, so 0.5 is comparable.
    memory_min_similarity: float = Field(0.5, ge=-1.0, le=1.0, description="cosine similarity a past question "
                                         "needs to be recalled")
    embedding_model: str = Field("all-MiniLM-L6-v2", description="sentence embedder of questions (name or path; "
                                 "loads offline)")
    embedding_device: str = Field("auto", description="torch device of the embedder; auto: GPU if any")
    prior_memories: str | None = Field(None, description="JSONL of memories seeded before round 0; null: "
                                       "assets/memories/prior_memories.jsonl")
    prior_memories_per_agent: int | None = Field(None, ge=0, description="prior memories drawn per agent from "
                                                 "those matching its stance; null: all of them")

    # Generation.
    max_new_tokens: int = Field(48, ge=1, description="longest draft, feedback or revision, in tokens")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature of agents and observer")
    rating_retries: int = Field(2, ge=0, description="re-asks of an unparseable rating before it is stored as "
                                "null with a reason")
    empty_retries: int = Field(1, ge=0, description="re-asks of an empty draft or revision before it is stored "
                               "as it is")

    # Checks.
    min_clean_share: float = Field(0.95, ge=0.0, le=1.0, description="share of clean drafts and revisions below "
                                   "which the blocking outputs_clean check fails the batch")

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
        if not data["chat_prior_models"]:  # added later: worlds from before it keep their hash
            del data["chat_prior_models"]
        if data["observer_replies"] == "sampled":  # likewise
            del data["observer_replies"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    def world_id(self, batch: str) -> str:
        return f"{batch}#{self.world_hash()}"
