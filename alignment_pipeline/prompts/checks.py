"""Data-quality checks on the stored seed prompts (turned into asset checks by the orchestration layer)."""

from __future__ import annotations

from alignment_pipeline.checks import Check, CheckOutcome
from alignment_pipeline.prompts.ingest import BATCH_PROMPTS_WHERE
from alignment_pipeline.warehouse.db import Warehouse


def check_no_empty_text(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """Every prompt of the batch (stored by it or first by another batch) has non-blank text."""
    total, empty = warehouse.query(
        "SELECT count(*) AS total, count(*) FILTER (WHERE text IS NULL OR trim(text) = '') AS empty "
        f"FROM prompts WHERE {BATCH_PROMPTS_WHERE}", [batch, batch]).row(0)
    return CheckOutcome(
        passed=empty == 0,
        description=f"{empty} of {total} prompts of batch {batch!r} have empty text",
        metadata={"batch": batch, "prompts": total, "empty": empty},
    )


def check_unique_hash(warehouse: Warehouse) -> CheckOutcome:
    """No two stored prompts share a content hash (the dedupe key), across all batches."""
    frame = warehouse.query(
        "SELECT hash, count(*) AS n FROM prompts GROUP BY hash HAVING count(*) > 1 ORDER BY n DESC, hash")
    total = warehouse.count("prompts")
    return CheckOutcome(
        passed=frame.height == 0,
        description=f"{frame.height} hashes are shared by more than one of {total} prompts",
        metadata={"prompts": total, "duplicated_hashes": frame.height,
                  "examples": frame.head(5)["hash"].to_list()},
    )


def check_hash_matches_text(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """Each stored hash is the sha256 of its stored text, so dedupe keys cannot drift from the data."""
    total, mismatched = warehouse.query(
        f"SELECT count(*), count(*) FILTER (WHERE hash <> sha256(text)) FROM prompts WHERE {BATCH_PROMPTS_WHERE}",
        [batch, batch]).row(0)
    return CheckOutcome(
        passed=mismatched == 0,
        description=f"{mismatched} of {total} prompts of batch {batch!r} have a hash that is not sha256(text)",
        metadata={"batch": batch, "prompts": total, "mismatched": mismatched},
    )


def check_rejected_rows(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """Warns when rows of the batch's file (as last ingested) were rejected: the good rows are stored, the bad
    ones are quarantined in rejected_prompts with their line and reason (counted here by reason kind).
    Rejections of earlier versions of the file stay in rejected_prompts but are not counted."""
    frame = warehouse.query(
        "SELECT split_part(reason, ':', 1) AS kind, count(*) AS n FROM rejected_prompts r "
        "WHERE batch = ? AND file_sha256 = coalesce("
        "(SELECT file_sha256 FROM prompt_batches b WHERE b.batch = r.batch), '') "
        "GROUP BY kind ORDER BY n DESC, kind", [batch])
    reasons = dict(frame.select("kind", "n").rows())
    rejected = sum(reasons.values())
    return CheckOutcome(
        passed=rejected == 0,
        severity="WARN",
        description=f"{rejected} rows of batch {batch!r} were rejected"
                    + (" (see rejected_prompts)" if rejected else ""),
        metadata={"batch": batch, "rejected": rejected, "reasons": reasons},
    )


SEED_PROMPT_CHECKS: tuple[Check, ...] = (
    Check("no_empty_text", check_no_empty_text),
    Check("unique_hash", check_unique_hash),
    Check("hash_matches_text", check_hash_matches_text),
    Check("rejected_rows", check_rejected_rows),
)
