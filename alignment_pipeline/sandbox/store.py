"""Reads and writes of the sandbox tables (sql/schema/020_sandbox.sql, 021_sandbox_extra.sql).

A round's results are staged as Arrow tables (one registration per round) and every interaction is then
committed in its own transaction: its interaction row, its feedback rows and every memory it created
(for the agent and for its neighbours). A crash leaves whole interactions or none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa

from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.sandbox.memory import MemoryBank
from alignment_pipeline.warehouse.db import Warehouse, in_transaction

# Memory kinds an agent retrieves from when it answers or judges: what it (or its prior self) answered.
RETRIEVABLE_KINDS = ("prior", "answer")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def stable_id(*parts: object, length: int = 24) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:length]


def interaction_id(world_id: str, round_index: int, agent_id: int) -> str:
    return stable_id(world_id, round_index, agent_id)


@dataclass
class MemoryRow:
    agent_id: int
    kind: str  # prior | answer | feedback_given | feedback_received
    question: str
    answer: str
    embedding: np.ndarray
    round: int | None = None
    feedback: str | None = None
    rating: float | None = None
    key: str = ""  # distinguishes rows of the same agent, kind and round


@dataclass
class FeedbackRow:
    position: int
    neighbour_id: int
    neighbour_model: str
    feedback: str
    rating: float | None
    rating_argmax: int | None
    rating_method: str | None
    null_reason: str | None
    retrieved_memories: list[dict] = field(default_factory=list)
    expected_rating: float | None = None  # log-prob expectation (see ratings.py), only with enough mass
    rating_mass: float | None = None


@dataclass
class InteractionRecord:
    world_id: str
    batch: str
    round: int
    agent_id: int
    agent_label: str
    agent_model: str
    prompt_id: str
    question: str
    retrieved_memories: list[dict]
    draft: str
    neighbour_ids: list[int]
    mean_feedback_rating: float | None
    revision: str
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    feedback: list[FeedbackRow]
    memories: list[MemoryRow]

    @property
    def interaction_id(self) -> str:
        return interaction_id(self.world_id, self.round, self.agent_id)


# -- reads -------------------------------------------------------------------------------------------------

def load_prompts(warehouse: Warehouse, batch: str) -> list[tuple[str, str]]:
    """(prompt_id, text) of a batch in file order: every prompt of its file (prompt_batch_members, texts
    another batch stored first included) and the prompts written for it directly (insert_prompts)."""
    rows = warehouse.query(
        "SELECT p.prompt_id, p.text FROM prompts p "
        "LEFT JOIN prompt_batch_members m ON m.batch = ? AND m.prompt_id = p.prompt_id "
        "WHERE p.batch = ? OR m.prompt_id IS NOT NULL ORDER BY coalesce(m.line, p.line), p.prompt_id",
        [batch, batch])
    if rows.height == 0:
        raise ValueError(f"prompt batch {batch!r} has no prompts in the warehouse; ingest it first")
    return list(zip(rows["prompt_id"].to_list(), rows["text"].to_list(), strict=True))


def world_exists(warehouse: Warehouse, world_id: str) -> bool:
    return warehouse.count("sandbox_worlds", "world_id = ?", [world_id]) > 0


def completed_keys(warehouse: Warehouse, world_id: str) -> set[tuple[int, int]]:
    rows = warehouse.query("SELECT round, agent_id FROM sandbox_interactions WHERE world_id = ?", [world_id])
    return set(zip(rows["round"].to_list(), rows["agent_id"].to_list(), strict=True))


def load_memory_bank(warehouse: Warehouse, world_id: str, before_round: int, dim: int) -> MemoryBank:
    """Retrievable memories of the world as they stood when `before_round` began: priors plus answers of
    earlier rounds. A round never sees its own writes, so a resumed round retrieves exactly what an
    uninterrupted one did."""
    kinds = ", ".join(f"'{k}'" for k in RETRIEVABLE_KINDS)
    with warehouse.connect(read_only=True) as con:
        table = con.sql(
            f"SELECT agent_id, question, answer, embedding FROM agent_memories "
            f"WHERE world_id = ? AND kind IN ({kinds}) AND (round IS NULL OR round < ?) "
            f"ORDER BY agent_id, coalesce(round, -1), memory_id", params=[world_id, before_round]).arrow()
        table = table.read_all() if isinstance(table, pa.RecordBatchReader) else table
    return MemoryBank.from_arrow(table, dim)


# -- writes ------------------------------------------------------------------------------------------------

def insert_prompts(warehouse: Warehouse, batch: str, texts: Sequence[str], *, source_file: str = "generated") -> None:
    """Write prompt rows of a batch directly, in order (benchmarks and tests; real batches come from the
    prompt ingestion step)."""
    stamp = now()
    with warehouse.transaction() as con:
        for line, text in enumerate(texts, start=1):
            digest = hashlib.sha256(text.encode()).hexdigest()
            con.execute("INSERT INTO prompts (prompt_id, batch, source_file, line, text, category, hash, ingested_at) "
                        "VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                        [f"{batch}-{line}", batch, source_file, line, text, digest, stamp])


def create_world(warehouse: Warehouse, world_id: str, batch: str, config: SandboxConfig,
                 priors: Sequence[MemoryRow]) -> bool:
    """Insert the world row and its agents' prior memories in one transaction, unless the world exists.
    Returns whether it was created now."""
    with warehouse.transaction() as con:
        if con.execute("SELECT count(*) FROM sandbox_worlds WHERE world_id = ?", [world_id]).fetchone()[0]:
            return False
        con.execute("INSERT INTO sandbox_worlds (world_id, batch, config, seed, created_at) VALUES (?, ?, ?, ?, ?)",
                    [world_id, batch, config.model_dump_json(), config.seed, now()])
        table = _memory_table(world_id, [(None, m) for m in priors])
        con.register("_priors", table)
        try:
            con.execute(f"INSERT INTO agent_memories ({_MEMORY_COLS}) SELECT {_MEMORY_COLS} FROM _priors")
        finally:
            con.unregister("_priors")
    return True


def commit_round(warehouse: Warehouse, records: Sequence[InteractionRecord]) -> int:
    """Commit each interaction in its own transaction (on one connection); returns how many."""
    if not records:
        return 0
    staged = _stage(records)
    with warehouse.connect() as con:
        for name, table in staged.items():
            con.register(name, table)
        try:
            for record in records:
                commit_interaction(con, record.interaction_id)
        finally:
            for name in staged:
                con.unregister(name)
    return len(records)


def commit_interaction(con: duckdb.DuckDBPyConnection, iid: str) -> None:
    """One interaction's rows from the staged tables, all or nothing."""
    with in_transaction(con):
        con.execute(f"INSERT INTO sandbox_interactions ({_INTERACTION_COLS}) "
                    f"SELECT {_INTERACTION_COLS} FROM _stage_interactions WHERE interaction_id = ?", [iid])
        con.execute(f"INSERT INTO sandbox_feedback ({_FEEDBACK_COLS}) "
                    f"SELECT {_FEEDBACK_COLS} FROM _stage_feedback WHERE interaction_id = ?", [iid])
        con.execute("INSERT INTO sandbox_feedback_memories (interaction_id, position, retrieved_memories) "
                    "SELECT interaction_id, position, retrieved_memories FROM _stage_feedback "
                    "WHERE interaction_id = ?", [iid])
        con.execute(f"INSERT INTO agent_memories ({_MEMORY_COLS}) "
                    f"SELECT {_MEMORY_COLS} FROM _stage_memories WHERE interaction_id = ?", [iid])


_INTERACTION_COLS = ("interaction_id, world_id, batch, round, agent_id, agent_label, agent_model, prompt_id, "
                     "question, retrieved_memories, draft, neighbour_ids, mean_feedback_rating, revision, "
                     "llm_calls, prompt_tokens, completion_tokens, created_at")
_FEEDBACK_COLS = ("interaction_id, position, neighbour_id, neighbour_model, feedback, rating, rating_argmax, "
                  "rating_method, null_reason, expected_rating, rating_mass")
_MEMORY_COLS = ("memory_id, world_id, agent_id, kind, round, question, answer, feedback, rating, embedding, "
                "created_at")


def _memory_table(world_id: str, rows: Sequence[tuple[str | None, MemoryRow]]) -> pa.Table:
    """Memory rows (tagged with the interaction that wrote them) as an Arrow table; ids are stable hashes so
    a row can never be written twice."""
    stamp = now()
    vectors = (np.stack([m.embedding for _, m in rows]).astype(np.float32) if rows
               else np.zeros((0, 0), dtype=np.float32))
    offsets = np.arange(len(rows) + 1, dtype=np.int32) * vectors.shape[1]
    embedding = pa.ListArray.from_arrays(pa.array(offsets), pa.array(vectors.ravel(), type=pa.float32()))
    return pa.table({
        "interaction_id": pa.array([iid for iid, _ in rows], type=pa.string()),
        "memory_id": [stable_id(world_id, m.agent_id, m.kind, m.round, m.key) for _, m in rows],
        "world_id": [world_id] * len(rows),
        "agent_id": pa.array([m.agent_id for _, m in rows], type=pa.int32()),
        "kind": [m.kind for _, m in rows],
        "round": pa.array([m.round for _, m in rows], type=pa.int32()),
        "question": [m.question for _, m in rows],
        "answer": [m.answer for _, m in rows],
        "feedback": pa.array([m.feedback for _, m in rows], type=pa.string()),
        "rating": pa.array([m.rating for _, m in rows], type=pa.float64()),
        "embedding": embedding,
        "created_at": pa.array([stamp] * len(rows), type=pa.timestamp("us")),
    })


def _stage(records: Sequence[InteractionRecord]) -> dict[str, pa.Table]:
    stamp = now()
    interactions = pa.table({
        "interaction_id": [r.interaction_id for r in records],
        "world_id": [r.world_id for r in records],
        "batch": [r.batch for r in records],
        "round": pa.array([r.round for r in records], type=pa.int32()),
        "agent_id": pa.array([r.agent_id for r in records], type=pa.int32()),
        "agent_label": [r.agent_label for r in records],
        "agent_model": [r.agent_model for r in records],
        "prompt_id": [r.prompt_id for r in records],
        "question": [r.question for r in records],
        "retrieved_memories": [json.dumps(r.retrieved_memories) for r in records],
        "draft": [r.draft for r in records],
        "neighbour_ids": pa.array([r.neighbour_ids for r in records], type=pa.list_(pa.int32())),
        "mean_feedback_rating": pa.array([r.mean_feedback_rating for r in records], type=pa.float64()),
        "revision": [r.revision for r in records],
        "llm_calls": pa.array([r.llm_calls for r in records], type=pa.int32()),
        "prompt_tokens": pa.array([r.prompt_tokens for r in records], type=pa.int32()),
        "completion_tokens": pa.array([r.completion_tokens for r in records], type=pa.int32()),
        "created_at": pa.array([stamp] * len(records), type=pa.timestamp("us")),
    })
    fb = [(r.interaction_id, f) for r in records for f in r.feedback]
    feedback = pa.table({
        "interaction_id": pa.array([iid for iid, _ in fb], type=pa.string()),
        "position": pa.array([f.position for _, f in fb], type=pa.int32()),
        "neighbour_id": pa.array([f.neighbour_id for _, f in fb], type=pa.int32()),
        "neighbour_model": pa.array([f.neighbour_model for _, f in fb], type=pa.string()),
        "feedback": pa.array([f.feedback for _, f in fb], type=pa.string()),
        "rating": pa.array([f.rating for _, f in fb], type=pa.float64()),
        "rating_argmax": pa.array([f.rating_argmax for _, f in fb], type=pa.int32()),
        "rating_method": pa.array([f.rating_method for _, f in fb], type=pa.string()),
        "null_reason": pa.array([f.null_reason for _, f in fb], type=pa.string()),
        "expected_rating": pa.array([f.expected_rating for _, f in fb], type=pa.float64()),
        "rating_mass": pa.array([f.rating_mass for _, f in fb], type=pa.float64()),
        "retrieved_memories": pa.array([json.dumps(f.retrieved_memories) for _, f in fb], type=pa.string()),
    })
    memories = _memory_table(records[0].world_id, [(r.interaction_id, m) for r in records for m in r.memories])
    return {"_stage_interactions": interactions, "_stage_feedback": feedback, "_stage_memories": memories}
