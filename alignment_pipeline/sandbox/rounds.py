"""One Back-Scatter round, every phase one batch across all agents of the round:

drafts (memory-conditioned) -> neighbour feedback (each neighbour with its own memory; rating + reason)
-> feedback ordered lowest rating last -> revisions told the average rating and the reasons -> commit
(interaction, feedback and every memory it wrote, one transaction per interaction).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from alignment_pipeline.llm.base import GenerationParams, LLMBackend
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.sandbox import store
from alignment_pipeline.sandbox.answers import clean_answer
from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.sandbox.dispatch import Reply, generate_nonempty
from alignment_pipeline.sandbox.embedding import Embedder
from alignment_pipeline.sandbox.memory import Retrieved
from alignment_pipeline.sandbox.ratings import RatingResult, mean_rating, rate
from alignment_pipeline.sandbox.templates import draft_prompt, feedback_prompt, member_system, revision_prompt
from alignment_pipeline.sandbox.world import World, question_index
from alignment_pipeline.warehouse.db import Warehouse

logger = logging.getLogger(__name__)

_USAGE_FIELDS = ("calls", "batches", "prompt_tokens", "completion_tokens", "seconds")


class BackendPool:
    """The backend of each spec, built on first use and shared by every agent (and observer) naming it."""

    def __init__(self, backend_for: Callable[[BackendSpec], LLMBackend]):
        self._backend_for = backend_for
        self._by_spec: dict[str, LLMBackend] = {}

    def get(self, spec: BackendSpec) -> LLMBackend:
        key = spec.model_dump_json()
        if key not in self._by_spec:
            self._by_spec[key] = self._backend_for(spec)
        return self._by_spec[key]

    def usage(self) -> dict[str, float]:
        """Summed usage counters of the distinct backend instances in use."""
        total = dict.fromkeys(_USAGE_FIELDS, 0.0)
        for backend in {id(b): b for b in self._by_spec.values()}.values():
            snap = backend.usage.snapshot()
            for name in _USAGE_FIELDS:
                total[name] += snap.get(name, 0)
        return total


@dataclass
class RoundStats:
    round: int
    interactions: int
    llm_calls: int
    batches: int
    prompt_tokens: int
    completion_tokens: int
    backend_seconds: float
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RoundContext:
    warehouse: Warehouse
    world: World
    world_id: str
    batch: str
    config: SandboxConfig
    prompts: Sequence[tuple[str, str]]  # (prompt_id, text) in batch order
    embedder: Embedder
    backends: BackendPool
    progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        logger.info("%s: %s", self.world_id, message)
        if self.progress is not None:
            self.progress(message)


def _phase_seed(seed: int, round_index: int, phase: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{round_index}|{phase}".encode()).digest()[:4], "little") >> 1


def run_round(ctx: RoundContext, round_index: int, agent_ids: Sequence[int]) -> RoundStats:
    """Run round `round_index` for `agent_ids` (those of the round not yet committed) and commit each
    interaction. Returns the round's counters (LLM usage as deltas of the backends' counters)."""
    started = time.perf_counter()
    config, world = ctx.config, ctx.world
    agent_ids = sorted(agent_ids)
    backend_of = {a: ctx.backends.get(world.agents[a].model) for a in range(len(world))}
    system_of = {a: member_system(world.agents[a].model.model in config.chat_prior_models) for a in range(len(world))}
    before = ctx.backends.usage()

    def params(phase: str) -> GenerationParams:
        return GenerationParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                seed=_phase_seed(config.seed, round_index, phase))

    # Questions and their embeddings (one encode for the round).
    asked = {a: ctx.prompts[question_index(round_index, a, len(world), len(ctx.prompts))] for a in agent_ids}
    texts = sorted({q for _, q in asked.values()})
    vectors = ctx.embedder.encode(texts)
    vector_of = {q: vectors[i] for i, q in enumerate(texts)}
    bank = store.load_memory_bank(ctx.warehouse, ctx.world_id, round_index, vectors.shape[1])

    # Drafts, each conditioned on the agent's most similar past questions.
    ctx.say(f"round {round_index}: drafts for {len(agent_ids)} agents")
    recalled = bank.retrieve(agent_ids, np.stack([vector_of[asked[a][1]] for a in agent_ids]),
                             config.memory_top_n, config.memory_min_similarity)
    recalled_of = dict(zip(agent_ids, recalled, strict=True))
    drafts = generate_nonempty([(backend_of[a], draft_prompt(asked[a][1], recalled_of[a], system=system_of[a]))
                                for a in agent_ids],
                               params("draft"), config.empty_retries, clean=clean_answer)
    draft_of = dict(zip(agent_ids, drafts, strict=True))

    # Feedback: every (agent, neighbour) pair of the round in one rating batch.
    drawn = {a: world.draw_neighbours(round_index, a) for a in agent_ids}
    pairs = [(a, b) for a in agent_ids for b in drawn[a]]
    ctx.say(f"round {round_index}: feedback from {len(pairs)} neighbours")
    judge_memories = bank.retrieve([b for _, b in pairs], np.stack([vector_of[asked[a][1]] for a, _ in pairs]),
                                   config.memory_top_n, config.memory_min_similarity)
    ratings = rate([(backend_of[b], feedback_prompt(asked[a][1], draft_of[a].text, mem, system=system_of[b]))
                    for (a, b), mem in zip(pairs, judge_memories, strict=True)],
                   params("feedback"), config.rating_retries)
    given: dict[int, list[tuple[int, RatingResult, list[Retrieved]]]] = {a: [] for a in agent_ids}
    for (a, b), mem, result in zip(pairs, judge_memories, ratings, strict=True):
        given[a].append((b, result, mem))
    # Shown order: ratings high to low so the lowest comes last; unrated feedback (kept, not shown) first.
    for a in agent_ids:
        given[a].sort(key=lambda item: (item[1].value is not None, -(item[1].value or 0.0)))

    # Revisions: the average rating and the reasons, lowest last.
    ctx.say(f"round {round_index}: revisions for {len(agent_ids)} agents")
    means = {a: mean_rating([r.value for _, r, _ in given[a]]) for a in agent_ids}
    shown = {a: [(r.value, r.reason) for _, r, _ in given[a] if r.value is not None] for a in agent_ids}
    revisions = generate_nonempty(
        [(backend_of[a], revision_prompt(asked[a][1], draft_of[a].text, means[a], len(shown[a]), len(given[a]),
                                         shown[a], system=system_of[a])) for a in agent_ids],
        params("revision"), config.empty_retries, clean=clean_answer)
    revision_of = dict(zip(agent_ids, revisions, strict=True))

    records = [_record(ctx, round_index, a, asked[a], vector_of[asked[a][1]], recalled_of[a], draft_of[a],
                       given[a], means[a], revision_of[a], backend_of) for a in agent_ids]
    store.commit_round(ctx.warehouse, records)

    after = ctx.backends.usage()
    delta = {k: after[k] - before[k] for k in _USAGE_FIELDS}
    stats = RoundStats(round_index, len(records), int(delta["calls"]), int(delta["batches"]),
                       int(delta["prompt_tokens"]), int(delta["completion_tokens"]), round(delta["seconds"], 4),
                       round(time.perf_counter() - started, 4))
    logger.info("%s round %d: %d interactions, %d LLM calls in %d batches, %d prompt + %d completion tokens, "
                "%.2fs (backends %.2fs)", ctx.world_id, round_index, stats.interactions, stats.llm_calls,
                stats.batches, stats.prompt_tokens, stats.completion_tokens, stats.seconds, stats.backend_seconds)
    ctx.say(f"round {round_index}: committed {stats.interactions} interactions, {stats.llm_calls} LLM calls")
    return stats


def _record(ctx: RoundContext, round_index: int, agent_id: int, asked: tuple[str, str], vector: np.ndarray,
            recalled: list[Retrieved], draft: Reply, given: list[tuple[int, RatingResult, list[Retrieved]]],
            mean: float | None, revision: Reply, backend_of: dict[int, LLMBackend]) -> store.InteractionRecord:
    prompt_id, question = asked
    agent = ctx.world.agents[agent_id]
    feedback = [store.FeedbackRow(position, b, backend_of[b].model_name, r.reason, r.value, r.argmax, r.method,
                                  r.null_reason, [m.as_json() for m in mem], r.expected, r.mass)
                for position, (b, r, mem) in enumerate(given)]
    reasons = "\n".join(r.reason for _, r, _ in given if r.value is not None)
    memories = [
        store.MemoryRow(agent_id, "feedback_received", question, draft.text, vector, round_index,
                        feedback=reasons, rating=mean, key="received"),
        store.MemoryRow(agent_id, "answer", question, revision.text, vector, round_index, key="answer"),
        *[store.MemoryRow(b, "feedback_given", question, draft.text, vector, round_index, feedback=r.reason,
                          rating=r.value, key=f"gave:{agent_id}") for b, r, _ in given],
    ]
    return store.InteractionRecord(
        world_id=ctx.world_id, batch=ctx.batch, round=round_index, agent_id=agent_id, agent_label=agent.label,
        agent_model=backend_of[agent_id].model_name, prompt_id=prompt_id, question=question,
        retrieved_memories=[m.as_json() for m in recalled], draft=draft.text,
        neighbour_ids=[b for b, _, _ in given], mean_feedback_rating=mean, revision=revision.text,
        llm_calls=draft.calls + revision.calls + sum(r.calls for _, r, _ in given),
        prompt_tokens=draft.prompt_tokens + revision.prompt_tokens + sum(r.prompt_tokens for _, r, _ in given),
        completion_tokens=(draft.completion_tokens + revision.completion_tokens
                           + sum(r.completion_tokens for _, r, _ in given)),
        feedback=feedback, memories=memories)
