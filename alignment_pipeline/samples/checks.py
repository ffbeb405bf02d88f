"""Data-quality checks on the stored alignment samples of one batch (turned into asset checks by the
orchestration layer). The blocking ones stop training on bad data."""

from __future__ import annotations

from alignment_pipeline.checks import Check, CheckOutcome
from alignment_pipeline.samples.config import SAMPLE_TYPES, SamplesConfig
from alignment_pipeline.warehouse.db import Warehouse


def check_rating_in_range(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """Every stored rating is present and within 1..7 (the build never stores a NULL rating)."""
    total, bad, nulls = warehouse.query(
        "SELECT count(*), count(*) FILTER (WHERE rating IS NULL OR NOT (rating BETWEEN 1 AND 7) OR isnan(rating)), "
        "count(*) FILTER (WHERE rating IS NULL) FROM alignment_samples WHERE batch = ?", [batch]).row(0)
    examples = _examples(warehouse, batch, "rating IS NULL OR NOT (rating BETWEEN 1 AND 7) OR isnan(rating)")
    return CheckOutcome(
        passed=bad == 0,
        description=f"{bad} of {total} samples of batch {batch!r} have a rating outside 1..7 or NULL",
        metadata={"batch": batch, "samples": total, "out_of_range": bad, "null": nulls, "examples": examples})


def check_nonempty_response(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """No stored response is empty or whitespace only."""
    total, bad = warehouse.query(
        "SELECT count(*), count(*) FILTER (WHERE response IS NULL OR samples_strip(response) = '') "
        "FROM alignment_samples WHERE batch = ?", [batch]).row(0)
    examples = _examples(warehouse, batch, "response IS NULL OR samples_strip(response) = ''")
    return CheckOutcome(
        passed=bad == 0,
        description=f"{bad} of {total} samples of batch {batch!r} have an empty response",
        metadata={"batch": batch, "samples": total, "empty": bad, "examples": examples})


def check_unique_id(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """sample_id is unique and is the stable hash of its content (prompt_key = hash(instruction, input),
    sample_id = hash(sample_type, prompt_key, response)), so dedupe keys cannot drift from the data."""
    total, distinct, bad_key, bad_id = warehouse.query(
        "SELECT count(*), count(DISTINCT sample_id), "
        "count(*) FILTER (WHERE prompt_key <> md5(instruction || chr(31) || input)), "
        "count(*) FILTER (WHERE sample_id <> md5(sample_type || chr(31) || prompt_key || chr(31) || response)) "
        "FROM alignment_samples WHERE batch = ?", [batch]).row(0)
    duplicated = total - distinct
    return CheckOutcome(
        passed=duplicated == 0 and bad_key == 0 and bad_id == 0,
        description=(f"batch {batch!r}: {duplicated} repeated sample_ids, {bad_key} prompt_keys and {bad_id} "
                     f"sample_ids not matching their content, of {total} samples"),
        metadata={"batch": batch, "samples": total, "repeated_ids": duplicated, "mismatched_prompt_key": bad_key,
                  "mismatched_sample_id": bad_id})


def check_traceable(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """Every sample joins back to its interaction in sandbox_interactions, of the same batch, world and round."""
    total, orphans = warehouse.query(
        "SELECT count(*), count(*) FILTER (WHERE i.interaction_id IS NULL) "
        "FROM alignment_samples s LEFT JOIN sandbox_interactions i ON i.interaction_id = s.interaction_id "
        "AND i.batch = s.batch AND i.world_id = s.world_id AND i.round = s.round WHERE s.batch = ?",
        [batch]).row(0)
    examples = warehouse.query(
        "SELECT s.sample_id, s.interaction_id FROM alignment_samples s ANTI JOIN sandbox_interactions i "
        "ON i.interaction_id = s.interaction_id AND i.batch = s.batch AND i.world_id = s.world_id "
        "AND i.round = s.round WHERE s.batch = ? ORDER BY s.sample_id LIMIT 5", [batch]).to_dicts()
    return CheckOutcome(
        passed=orphans == 0,
        description=f"{orphans} of {total} samples of batch {batch!r} do not join back to an interaction",
        metadata={"batch": batch, "samples": total, "orphans": orphans, "examples": examples})


def owns_only_duplicates(warehouse: Warehouse, batch: str) -> bool:
    """The batch has prompts, but an earlier batch brought every one of them first (a file and its copy): it
    runs no interactions of its own, so it has no samples of its own either."""
    return (warehouse.count("prompt_batch_members", "batch = ?", [batch]) > 0
            and warehouse.count("prompts", "batch = ?", [batch]) == 0)


def check_type_shares(warehouse: Warehouse, batch: str, config: SamplesConfig | None = None) -> CheckOutcome:
    """Reports counts and shares per sample type; passes when the batch has samples, or owns no new prompts
    (then there is nothing of its own to count: not applicable). With config.type_shares set, the deviation from
    the target shares is reported too."""
    frame = warehouse.query(
        "SELECT sample_type, count(*) AS n FROM alignment_samples WHERE batch = ? GROUP BY sample_type", [batch])
    counts = dict.fromkeys(SAMPLE_TYPES, 0) | dict(zip(frame["sample_type"].to_list(), frame["n"].to_list(), strict=True))
    total = sum(counts.values())
    if not total and owns_only_duplicates(warehouse, batch):
        return CheckOutcome(
            passed=True, severity="WARN",
            description=(f"batch {batch!r} owns no new prompts (every one was brought by an earlier batch), so it "
                         "has no samples of its own: not applicable"),
            metadata={"batch": batch, "samples": 0, "new_prompts": 0, "applicable": False})
    shares = {t: round(counts[t] / total, 4) if total else 0.0 for t in counts}
    metadata = {"batch": batch, "samples": total, **{f"count_{t}": n for t, n in counts.items()},
                **{f"share_{t}": s for t, s in shares.items()}}
    if config is not None and config.type_shares is not None and total:
        metadata["max_share_deviation"] = round(max(abs(shares[t] - config.type_shares[t]) for t in SAMPLE_TYPES), 4)
    return CheckOutcome(
        passed=total > 0,
        description=f"batch {batch!r}: " + ", ".join(f"{t} {counts[t]} ({shares[t]:.1%})" for t in counts),
        metadata=metadata)


# Failing a blocking check stops training on the batch.
SAMPLE_CHECKS: tuple[Check, ...] = (
    Check("samples_rating_in_range", check_rating_in_range, blocking=True),
    Check("samples_nonempty_response", check_nonempty_response, blocking=True),
    Check("samples_unique_id", check_unique_id, blocking=True),
    Check("samples_traceable", check_traceable, blocking=True),
    Check("samples_type_shares", check_type_shares),
)


def _examples(warehouse: Warehouse, batch: str, condition: str) -> list[dict]:
    return warehouse.query(
        f"SELECT sample_id, sample_type, rating, left(response, 80) AS response FROM alignment_samples "
        f"WHERE batch = ? AND ({condition}) ORDER BY sample_id LIMIT 5", [batch]).to_dicts()
