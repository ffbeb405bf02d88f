"""The grid world: who sits where, who is whose neighbour, which stance and model each agent has.

Everything random here comes from generators seeded by (config.seed, purpose, ...), never from a shared
stream, so any single draw can be recomputed on its own: a resumed run draws the same neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.sandbox.config import SandboxConfig

GOOD, BAD = "good", "bad"
_STANCE_STREAM, _NEIGHBOUR_STREAM, _PRIOR_STREAM = 1, 2, 3


@dataclass(frozen=True)
class Agent:
    agent_id: int
    row: int
    col: int
    label: str  # stance: good | bad
    model: BackendSpec


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one purpose and one (round, agent, ...) key."""
    return np.random.default_rng([seed, *keys])


def stances(config: SandboxConfig) -> list[str]:
    """The stance of every agent, by agent_id.

    - `all_good`: every agent is good.
    - `all_bad`: every agent is bad.
    - `half_half`: two contiguous camps: agents 0 .. ceil(N/2)-1 (the top rows of the grid) are good,
      the rest bad, so most social circles are one-sided except along the border.
    - `mixed_half_half`: the same counts (ceil(N/2) good, floor(N/2) bad) scattered over the grid by a
      permutation drawn from the seed, so circles mix both stances.
    """
    n = config.agents
    n_good = (n + 1) // 2
    if config.init_setting == "all_good":
        return [GOOD] * n
    if config.init_setting == "all_bad":
        return [BAD] * n
    if config.init_setting == "half_half":
        return [GOOD if i < n_good else BAD for i in range(n)]
    if config.init_setting == "mixed_half_half":
        good = set(rng_for(config.seed, _STANCE_STREAM).permutation(n)[:n_good].tolist())
        return [GOOD if i in good else BAD for i in range(n)]
    raise ValueError(f"unknown init_setting {config.init_setting!r}")


class World:
    """A `size x size` grid; agent_id = row*size + col; the social circle of an agent is every other agent
    within Euclidean distance `radius` (inclusive)."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.size = config.size
        self.radius = config.circle_radius
        labels = stances(config)
        models = config.agent_models
        unknown = sorted(set(config.chat_prior_models) - {m.model for m in models})
        if unknown:  # a typo would silently leave every agent without the prior
            raise ValueError(f"sandbox.chat_prior_models names no agent model: {', '.join(unknown)}")
        self.agents = [Agent(i, i // self.size, i % self.size, labels[i], models[i % len(models)])
                       for i in range(config.agents)]
        rows = np.array([a.row for a in self.agents], dtype=float)
        cols = np.array([a.col for a in self.agents], dtype=float)
        dist = np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
        within = (dist <= self.radius + 1e-9) & ~np.eye(len(self.agents), dtype=bool)
        self._circles = [np.flatnonzero(within[i]).tolist() for i in range(len(self.agents))]
        empty = [i for i, c in enumerate(self._circles) if not c]
        if empty:
            raise ValueError(f"agents {empty} have nobody within radius {self.radius}; raise radius or size")

    def __len__(self) -> int:
        return len(self.agents)

    def social_circle(self, agent_id: int) -> list[int]:
        """Every other agent within `radius`, ascending."""
        return list(self._circles[agent_id])

    def neighbour_count(self, agent_id: int) -> int:
        return min(self.config.neighbours, len(self._circles[agent_id]))

    def draw_neighbours(self, round_index: int, agent_id: int) -> list[int]:
        """k neighbours (fewer when the circle is smaller) drawn without replacement from the social circle,
        from a generator keyed by (seed, round, agent): the same draw on every run and every resume."""
        circle = self._circles[agent_id]
        rng = rng_for(self.config.seed, _NEIGHBOUR_STREAM, round_index, agent_id)
        picks = rng.choice(len(circle), size=self.neighbour_count(agent_id), replace=False)
        return [circle[i] for i in picks.tolist()]

    def prior_rng(self, agent_id: int) -> np.random.Generator:
        return rng_for(self.config.seed, _PRIOR_STREAM, agent_id)


def question_index(round_index: int, agent_id: int, agents: int, available: int) -> int:
    """Round r gives agent a the prompt at position r*N + a of the batch (N agents), wrapping around to the
    start when the batch runs out. Within one round every agent gets a different question as long as the
    batch holds at least N prompts; with fewer, questions repeat within the round (a warning is logged)."""
    if available < 1:
        raise ValueError("no prompts to ask")
    return (round_index * agents + agent_id) % available
