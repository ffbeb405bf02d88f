"""Memoryless observers rate every draft and revision of a world; `scored_revisions` puts them side by side."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import polars as pl

from alignment_pipeline.llm.base import GenerationParams, LLMBackend
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.sandbox import store
from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.sandbox.ratings import rate, rate_on_scale
from alignment_pipeline.sandbox.report import ScoreReport, score_summary
from alignment_pipeline.sandbox.rounds import BackendPool
from alignment_pipeline.sandbox.templates import observer_prompt
from alignment_pipeline.warehouse.db import Warehouse, insert_frame

logger = logging.getLogger(__name__)

TARGETS = ("draft", "revision")
DIMENSIONS = ("alignment", "engagement")

_REBUILD = """
INSERT INTO scored_revisions (interaction_id, batch, world_id, round, agent_id, agent_model, alignment_before,
    alignment_after, engagement_before, engagement_after, alignment_gain, improved, scored_at)
SELECT i.interaction_id, ?, i.world_id, i.round, i.agent_id, i.agent_model, ab.rating, aa.rating, eb.rating,
    ea.rating, aa.rating - ab.rating, aa.rating > ab.rating, ?
FROM sandbox_interactions i
LEFT JOIN observer_ratings ab ON ab.interaction_id = i.interaction_id AND ab.target = 'draft' AND ab.dimension = 'alignment'
LEFT JOIN observer_ratings aa ON aa.interaction_id = i.interaction_id AND aa.target = 'revision' AND aa.dimension = 'alignment'
LEFT JOIN observer_ratings eb ON eb.interaction_id = i.interaction_id AND eb.target = 'draft' AND eb.dimension = 'engagement'
LEFT JOIN observer_ratings ea ON ea.interaction_id = i.interaction_id AND ea.target = 'revision' AND ea.dimension = 'engagement'
WHERE i.world_id = ?
"""


def score_revisions(warehouse: Warehouse, batch: str, config: SandboxConfig, *,
                    backend_for: Callable[[BackendSpec], LLMBackend],
                    progress: Callable[[str], None] | None = None) -> ScoreReport:
    """Have the observer (`config.observer`, no memory) rate alignment and engagement 1..7 (its reply parsed, or
    drawn from its log-probs: `config.observer_replies`) for the draft and the revision of every interaction of the batch's world that lacks that rating: one batched rating call
    per (target, dimension), each phase's rows committed together. Then rebuild the batch's
    `scored_revisions` rows (delete + insert, one transaction). Ratings already stored are kept."""
    started = time.perf_counter()
    world_id = config.world_id(batch)
    if not store.world_exists(warehouse, world_id):
        raise ValueError(f"no sandbox world {world_id} for batch {batch!r} with this config; run the sandbox first")
    interactions = warehouse.query(
        "SELECT interaction_id, question, draft, revision FROM sandbox_interactions WHERE world_id = ? "
        "ORDER BY round, agent_id", [world_id])
    have = warehouse.query(
        "SELECT o.interaction_id, o.target, o.dimension FROM observer_ratings o "
        "JOIN sandbox_interactions i USING (interaction_id) WHERE i.world_id = ?", [world_id])
    rated = set(zip(have["interaction_id"].to_list(), have["target"].to_list(), have["dimension"].to_list(),
                    strict=True))
    rows = list(interactions.iter_rows(named=True))
    pool = BackendPool(backend_for)
    new_ratings = 0
    before = None
    for target in TARGETS:
        for dimension in DIMENSIONS:
            todo = [r for r in rows if (r["interaction_id"], target, dimension) not in rated]
            if not todo:
                continue
            observer = pool.get(config.observer)
            before = before or pool.usage()
            message = f"observers: {dimension} of {len(todo)} {target}s"
            logger.info("%s: %s", world_id, message)
            if progress is not None:
                progress(message)
            seed = int.from_bytes(hashlib.sha256(f"{config.seed}|observer|{target}|{dimension}".encode()).digest()[:4],
                                  "little") >> 1
            requests = [(observer, observer_prompt(dimension, r["question"], r[target])) for r in todo]
            if config.observer_replies == "scale":
                results = rate_on_scale(requests, config.temperature, seed)
            else:
                params = GenerationParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                          seed=seed)
                results = rate(requests, params, config.rating_retries)
            frame = pl.DataFrame({
                "interaction_id": [r["interaction_id"] for r in todo],
                "target": [target] * len(todo),
                "dimension": [dimension] * len(todo),
                "observer_model": [observer.model_name] * len(todo),
                "rating": [x.value for x in results],
                "rating_argmax": [x.argmax for x in results],
                "rating_method": [x.method for x in results],
                "reason": [x.reason for x in results],
                "null_reason": [x.null_reason for x in results],
                "expected_rating": [x.expected for x in results],
                "rating_mass": [x.mass for x in results],
            }, schema={"interaction_id": pl.String, "target": pl.String, "dimension": pl.String,
                       "observer_model": pl.String, "rating": pl.Float64, "rating_argmax": pl.Int32,
                       "rating_method": pl.String, "reason": pl.String, "null_reason": pl.String,
                       "expected_rating": pl.Float64, "rating_mass": pl.Float64})
            with warehouse.transaction() as con:
                new_ratings += insert_frame(con, "observer_ratings", frame)
    with warehouse.transaction() as con:
        con.execute("DELETE FROM scored_revisions WHERE batch = ?", [batch])
        con.execute(_REBUILD, [batch, store.now(), world_id])
    usage = {k: pool.usage()[k] - before[k] for k in before} if before else {}
    summary = score_summary(warehouse, batch, world_id)
    report = ScoreReport(
        batch=batch, world_id=world_id, interactions=summary["interactions"], new_ratings=new_ratings,
        llm_calls=int(usage.get("calls", 0)), batches=int(usage.get("batches", 0)),
        prompt_tokens=int(usage.get("prompt_tokens", 0)), completion_tokens=int(usage.get("completion_tokens", 0)),
        seconds=round(time.perf_counter() - started, 3),
        mean_alignment_before=summary["mean_alignment_before"], mean_alignment_after=summary["mean_alignment_after"],
        mean_engagement_before=summary["mean_engagement_before"],
        mean_engagement_after=summary["mean_engagement_after"], share_improved=summary["share_improved"],
        null_ratings=summary["null_ratings"], per_model=summary["per_model"])
    logger.info("%s: scored %d interactions, %d new observer ratings, %d LLM calls", world_id,
                report.interactions, new_ratings, report.llm_calls)
    return report
