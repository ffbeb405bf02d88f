"""Build the alignment samples of one prompt batch from the sandbox tables, inside DuckDB.

Three sample types per interaction (paper section 3), each a (prompt, response, rating):
- imitation: instruction = the question; responses = the draft (rated by the observer's alignment score of the
  draft) and the revision (rated by its score of the revision).
- self_critique: instruction = the critique task; input = question + draft; response = one neighbour's feedback;
  rating = that neighbour's rating, which rates the DRAFT, not the feedback (rating_source says so).
- realignment (paper section 3): only where the observer's alignment after > before and after > the threshold, and
  the revision is not its draft repeated (the observer's two scores of one text differ only by its noise).
  Form `contrastive` (default): ONE GROUP PER FEEDBACK; instruction = revise the response in light of the
  feedback (template.REVISION_INSTRUCTION); input = question + draft + that neighbour's feedback; responses = the
  revision (rated by the observer's alignment score after revision) and the draft itself (rated by its score
  before), so the Stable Alignment loss moves toward the revision and away from the draft on the same prompt.
  Form `original` (the original code): instruction = comment on the response, then revise it
  (template.REALIGNMENT_INSTRUCTION); input = question + draft; one row per feedback, response = that feedback +
  " Here is the revised response: " + the revision (template.realignment_response), every row rated with the
  observer's score of the revision: the rows of an interaction share one prompt and tie, so the group is
  single-rated and the loss is SFT on it.
`agent_model` is the model that wrote the response: the agent's for imitation and realignment (its draft and
revision; in the original form the critique in a response is the neighbour's), the neighbour's for self-critique.

Rules: text is stripped like template.py strips it; responses with a NULL rating or empty text are left out
(NULL never enters a scored group); a response repeated for one prompt is kept once (the earliest interaction
wins); per-type sampling keeps the first rows in sample_id order, so the same data always keeps the same rows.
sample_id = md5(sample_type, prompt_key, response) and prompt_key = md5(instruction, input), computed by DuckDB
(md5: a content key, not a security measure, and about twice as fast as sha256 here); `prompt_key()` and
`sample_id()` are the same hashes in Python.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from alignment_pipeline.samples.config import SAMPLE_TYPES, SamplesConfig
from alignment_pipeline.samples.template import REALIGNMENT_INSTRUCTION, REVISION_INSTRUCTION, REVISION_MARKER
from alignment_pipeline.warehouse.db import Warehouse

_SEP = "\x1f"  # unit separator between hashed fields (chr(31) in the SQL below)

SAMPLE_COLUMNS: tuple[str, ...] = (
    "sample_id", "sample_type", "batch", "prompt_key", "instruction", "input", "response", "rating",
    "rating_source", "agent_model", "world_id", "round", "interaction_id", "created_at",
)


def prompt_key(instruction: str, input: str = "") -> str:
    """The prompt grouping key, for instruction and input as stored (already stripped)."""
    return hashlib.md5(f"{instruction}{_SEP}{input}".encode(), usedforsecurity=False).hexdigest()


def sample_id(sample_type: str, key: str, response: str) -> str:
    """The stable sample id of (sample_type, prompt_key, response as stored)."""
    return hashlib.md5(f"{sample_type}{_SEP}{key}{_SEP}{response}".encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class SamplesReport:
    """What one build did, per sample type."""

    batch: str
    interactions: int
    counts: dict[str, int]             # rows stored for the batch
    candidates: dict[str, int]         # rows the rules produced before any filtering
    excluded_null: dict[str, int]      # NULL rating (never realignment: eligibility needs both observer scores)
    dropped_empty: dict[str, int]      # empty response text
    dropped_duplicates: dict[str, int]  # the same response to the same prompt seen again in this batch
    sampled_out: dict[str, int]        # left out by type_ratios / type_shares
    cross_batch_duplicates: int        # already stored by another batch under the same sample_id
    realignment: dict[str, int]        # interactions: eligible / null_scores / not_improved / not_above_threshold /
    #                                    unrevised (improved past the threshold, but the revision repeats the draft)
    replaced: int                      # rows of this batch deleted before the insert
    build_s: float
    load_s: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def type_shares(self) -> dict[str, float]:
        total = self.total
        return {t: (self.counts[t] / total if total else 0.0) for t in SAMPLE_TYPES}

    def metadata(self) -> dict:
        return {
            "batch": self.batch,
            "interactions": self.interactions,
            "samples": self.total,
            **{f"count_{t}": self.counts[t] for t in SAMPLE_TYPES},
            **{f"share_{t}": round(s, 4) for t, s in self.type_shares().items()},
            "candidates": dict(self.candidates),
            "excluded_null": dict(self.excluded_null),
            "dropped_empty": dict(self.dropped_empty),
            "dropped_duplicates": dict(self.dropped_duplicates),
            "sampled_out": dict(self.sampled_out),
            "cross_batch_duplicates": self.cross_batch_duplicates,
            "realignment_eligible": self.realignment["eligible"],
            "realignment": dict(self.realignment),
            "replaced_rows": self.replaced,
            "build_s": round(self.build_s, 4),
            "load_s": round(self.load_s, 4),
        }


def keep_counts(available: dict[str, int], config: SamplesConfig) -> dict[str, int]:
    """How many of each type's unique rated samples to keep: type_ratios first, then type_shares (if set)
    subsamples every type down to the proportion allowed by the scarcest type that has rows."""
    after_ratio = {t: available.get(t, 0) * config.type_ratios[t] for t in SAMPLE_TYPES}
    if config.type_shares is None:
        return {t: min(available.get(t, 0), math.floor(after_ratio[t] + 0.5)) for t in SAMPLE_TYPES}
    shares = config.type_shares
    present = [t for t in SAMPLE_TYPES if shares[t] > 0 and after_ratio[t] > 0]
    if not present:
        return {t: 0 for t in SAMPLE_TYPES}
    scale = min(after_ratio[t] / shares[t] for t in present)
    return {t: (min(available.get(t, 0), math.floor(min(after_ratio[t], scale * shares[t]) + 0.5))
                if t in present else 0) for t in SAMPLE_TYPES}


# The batch's interactions with their observer scores (LEFT JOIN: an unscored interaction has NULL scores), text
# stripped once here, and the prompt context and key of each type computed once per interaction.
_INTERACTIONS_SQL = """
CREATE OR REPLACE TEMP TABLE _s_inter AS
WITH base AS (
    SELECT i.interaction_id, i.world_id, i.round, i.agent_model, i.created_at,
           samples_strip(i.question) AS question, samples_strip(i.draft) AS draft,
           samples_strip(i.revision) AS revision, s.alignment_before, s.alignment_after
    FROM sandbox_interactions i
    LEFT JOIN scored_revisions s ON s.interaction_id = i.interaction_id
    WHERE i.batch = $batch
)
SELECT *,
       'Question:' || CASE WHEN question = '' THEN '' ELSE chr(10) || question END || chr(10) || chr(10)
       || 'Response:' || CASE WHEN draft = '' THEN '' ELSE chr(10) || draft END AS question_draft,
       md5(question || chr(31)) AS imitation_key,
       md5($critique || chr(31) || question_draft) AS critique_key,
       md5($realign || chr(31) || question_draft) AS realign_key
FROM base
"""

# The batch's neighbour feedback, stripped.
_FEEDBACK_SQL = """
CREATE OR REPLACE TEMP TABLE _s_feedback AS
SELECT f.interaction_id, f.position, f.neighbour_id, f.neighbour_model, samples_strip(f.feedback) AS feedback,
       f.rating
FROM sandbox_feedback f
SEMI JOIN _s_inter i ON i.interaction_id = f.interaction_id
"""

# Every candidate row the three rules produce, with its sample_id, before NULL/empty/duplicate filtering.
_CANDIDATES_SQL = """
CREATE OR REPLACE TEMP TABLE _s_rows AS
WITH realign AS (
    SELECT *
    FROM _s_inter
    -- comparisons with NULL are not true, so an interaction with a NULL score is never eligible; a revision that
    -- repeats its draft revised nothing, whatever the observer's two scores of the same text say
    WHERE alignment_after > alignment_before AND alignment_after > $threshold AND revision <> draft
),
candidates AS (
SELECT 'imitation' AS sample_type, imitation_key AS prompt_key, question AS instruction, '' AS input,
       draft AS response, alignment_before AS rating, 'observer:alignment:draft' AS rating_source, agent_model,
       world_id, round, interaction_id, created_at AS source_time, 0 AS source_order
FROM _s_inter
UNION ALL
SELECT 'imitation', imitation_key, question, '', revision, alignment_after, 'observer:alignment:revision',
       agent_model, world_id, round, interaction_id, created_at, 1
FROM _s_inter
UNION ALL
SELECT 'self_critique', i.critique_key, $critique, i.question_draft, f.feedback, f.rating,
       'neighbour:' || f.neighbour_id || ':rates_draft', f.neighbour_model,
       i.world_id, i.round, i.interaction_id, i.created_at, 2 + f.position
FROM _s_feedback f
JOIN _s_inter i ON i.interaction_id = f.interaction_id
UNION ALL
SELECT 'realignment', r.realign_key, $realign, r.question_draft,
       CASE WHEN f.feedback = '' OR r.revision = '' THEN '' ELSE f.feedback || $marker || r.revision END,
       r.alignment_after, 'observer:alignment:revision', r.agent_model,
       r.world_id, r.round, r.interaction_id, r.created_at, 2 + f.position
FROM _s_feedback f
JOIN realign r ON r.interaction_id = f.interaction_id
WHERE $form = 'original'
UNION ALL
-- contrastive: the revision and the draft under one prompt per feedback; a prompt without its feedback is not
-- the task, so an empty feedback empties both rows (counted as dropped_empty)
SELECT 'realignment', md5($revise || chr(31) || c.revise_input), $revise, c.revise_input,
       CASE WHEN c.feedback = '' THEN '' ELSE c.text END, c.rating, c.rating_source, c.agent_model,
       c.world_id, c.round, c.interaction_id, c.created_at, c.source_order
FROM (
    SELECT r.question_draft || chr(10) || chr(10) || 'Feedback:'
           || CASE WHEN f.feedback = '' THEN '' ELSE chr(10) || f.feedback END AS revise_input,
           f.feedback, v.text, v.rating, v.rating_source, r.agent_model, r.world_id, r.round, r.interaction_id,
           r.created_at, 2 + 2 * f.position + v.k AS source_order
    FROM _s_feedback f
    JOIN realign r ON r.interaction_id = f.interaction_id
    CROSS JOIN LATERAL (VALUES (0, r.revision, r.alignment_after, 'observer:alignment:revision'),
                               (1, r.draft, r.alignment_before, 'observer:alignment:draft'))
        AS v(k, text, rating, rating_source)
    WHERE $form = 'contrastive'
) c
)
SELECT *, md5(sample_type || chr(31) || prompt_key || chr(31) || response) AS sample_id
FROM candidates
"""

# Which rows to keep, decided on narrow columns (row id, type, sample_id) so no sort carries the texts:
# rated, non-empty rows; one per sample_id, the earliest interaction's; then the first `keep` of each type in
# sample_id order.
_UNIQUE_SQL = """
CREATE OR REPLACE TEMP TABLE _s_unique AS
SELECT sample_type, sample_id,
       arg_min(rowid, (source_time, interaction_id, source_order)) AS row_id
FROM _s_rows
WHERE rating IS NOT NULL AND response <> ''
GROUP BY sample_type, sample_id
"""

_FINAL_SQL = """
CREATE OR REPLACE TEMP TABLE _s_keep AS
SELECT u.row_id
FROM _s_unique u
JOIN (VALUES ('imitation', $keep_imitation), ('self_critique', $keep_self_critique),
             ('realignment', $keep_realignment)) AS k(sample_type, keep) USING (sample_type)
QUALIFY row_number() OVER (PARTITION BY u.sample_type ORDER BY u.sample_id) <= k.keep
"""

_STATS_SQL = """
SELECT t.sample_type,
       coalesce(c.candidates, 0), coalesce(c.null_rating, 0), coalesce(c.empty, 0), coalesce(u.n_unique, 0)
FROM (VALUES ('imitation'), ('self_critique'), ('realignment')) AS t(sample_type)
LEFT JOIN (SELECT sample_type, count(*) AS candidates,
                  count(*) FILTER (WHERE rating IS NULL) AS null_rating,
                  count(*) FILTER (WHERE rating IS NOT NULL AND response = '') AS empty
           FROM _s_rows GROUP BY sample_type) c USING (sample_type)
LEFT JOIN (SELECT sample_type, count(*) AS n_unique FROM _s_unique GROUP BY sample_type) u USING (sample_type)
"""

_REALIGNMENT_SQL = """
SELECT count(*) AS interactions,
       count(*) FILTER (WHERE alignment_after > alignment_before AND alignment_after > $threshold
                        AND revision <> draft) AS eligible,
       count(*) FILTER (WHERE alignment_before IS NULL OR alignment_after IS NULL) AS null_scores,
       count(*) FILTER (WHERE alignment_after <= alignment_before) AS not_improved,
       count(*) FILTER (WHERE alignment_after > alignment_before AND alignment_after <= $threshold)
           AS not_above_threshold,
       count(*) FILTER (WHERE alignment_after > alignment_before AND alignment_after > $threshold
                        AND revision = draft) AS unrevised
FROM _s_inter
"""

_INSERT_COLUMNS = ", ".join(SAMPLE_COLUMNS)


def build_samples(warehouse: Warehouse, batch: str, config: SamplesConfig, *,
                  now: datetime | None = None) -> SamplesReport:
    """Build the batch's alignment samples from sandbox_interactions, sandbox_feedback and scored_revisions
    and replace that batch's rows in alignment_samples (delete + insert in one transaction; other batches'
    rows are untouched). A sample_id another batch already stored is not inserted again (counted in
    `cross_batch_duplicates`)."""
    if not batch:
        raise ValueError("build_samples: batch must be a non-empty string")
    now = now or datetime.now(timezone.utc)
    # stored as naive UTC (TIMESTAMP column); a naive `now` is taken to be UTC already
    created_at = now if now.tzinfo is None else now.astimezone(timezone.utc).replace(tzinfo=None)
    started = time.perf_counter()
    with warehouse.transaction() as con:
        stats = _build(con, batch, config)
        built = time.perf_counter()
        replaced, cross = _load(con, batch, created_at)
        counts = dict.fromkeys(SAMPLE_TYPES, 0)
        for sample_type, n in con.execute(
                "SELECT sample_type, count(*) FROM alignment_samples WHERE batch = ? GROUP BY sample_type",
                [batch]).fetchall():
            counts[sample_type] = n
    loaded = time.perf_counter()
    return SamplesReport(
        batch=batch, counts=counts, cross_batch_duplicates=cross, replaced=replaced,
        build_s=built - started, load_s=loaded - built, **stats)


def _build(con: duckdb.DuckDBPyConnection, batch: str, config: SamplesConfig) -> dict:
    critique, realign_task = config.critique_instruction.strip(), REALIGNMENT_INSTRUCTION.strip()
    con.execute("SET enable_progress_bar = false")  # a library call prints nothing
    con.execute(_INTERACTIONS_SQL, {"batch": batch, "critique": critique, "realign": realign_task})
    con.execute(_FEEDBACK_SQL)
    con.execute(_CANDIDATES_SQL, {"critique": critique, "realign": realign_task, "marker": REVISION_MARKER,
                                  "revise": REVISION_INSTRUCTION.strip(), "form": config.realignment_form,
                                  "threshold": config.realignment_threshold})
    con.execute(_UNIQUE_SQL)
    realign = con.execute(_REALIGNMENT_SQL, {"threshold": config.realignment_threshold}).fetchone()
    interactions, eligible, null_scores, not_improved, not_above, unrevised = realign
    candidates, excluded_null, empty, unique = {}, {}, {}, {}
    for sample_type, n_cand, n_null, n_empty, n_unique in con.execute(_STATS_SQL).fetchall():
        candidates[sample_type], excluded_null[sample_type] = n_cand, n_null
        empty[sample_type], unique[sample_type] = n_empty, n_unique
    keep = keep_counts(unique, config)
    con.execute(_FINAL_SQL, {f"keep_{t}": keep[t] for t in SAMPLE_TYPES})
    return {
        "interactions": interactions,
        "candidates": candidates,
        "excluded_null": excluded_null,
        "dropped_empty": empty,
        "dropped_duplicates": {t: candidates[t] - excluded_null[t] - empty[t] - unique[t] for t in SAMPLE_TYPES},
        "sampled_out": {t: unique[t] - keep[t] for t in SAMPLE_TYPES},
        "realignment": {"interactions": interactions, "eligible": eligible, "null_scores": null_scores,
                        "not_improved": not_improved, "not_above_threshold": not_above,
                        "unrevised": unrevised},
    }


def _load(con: duckdb.DuckDBPyConnection, batch: str, created_at: datetime) -> tuple[int, int]:
    """Delete the batch's rows, then insert the built rows not already stored by another batch."""
    replaced = con.execute("DELETE FROM alignment_samples WHERE batch = ?", [batch]).fetchone()[0]
    kept = con.execute("SELECT count(*) FROM _s_keep").fetchone()[0]
    # the SELECT sees the table as it was before this INSERT: the anti-join skips other batches' sample_ids
    stored = con.execute(
        f"INSERT INTO alignment_samples ({_INSERT_COLUMNS}) "
        "SELECT r.sample_id, r.sample_type, $batch, r.prompt_key, r.instruction, r.input, r.response, r.rating, "
        "r.rating_source, r.agent_model, r.world_id, r.round, r.interaction_id, $created_at "
        "FROM _s_rows r SEMI JOIN _s_keep k ON k.row_id = r.rowid "
        "ANTI JOIN alignment_samples a ON a.sample_id = r.sample_id",
        {"batch": batch, "created_at": created_at}).fetchone()[0]
    cross = kept - stored
    return replaced, cross
