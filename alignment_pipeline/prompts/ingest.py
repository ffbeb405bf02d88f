"""Prompt ingestion: one inbox file = one prompt batch, stored in the warehouse in one transaction.

Prompts are deduplicated by the sha256 of their normalised text, across batches and within a file; a batch
still owns every prompt of its file (`prompt_batch_members`), also those another batch stored first.
Bad rows go to `rejected_prompts` with their line and reason while the good rows of the file are kept;
those quarantine rows are never deleted. Ingesting the same file again stores nothing new and leaves every
table as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from alignment_pipeline.prompts.readers import (
    PromptFileError,
    PromptRow,
    Rejection,
    read_prompt_file,
)
from alignment_pipeline.warehouse.db import Warehouse, insert_frame, relation_frame

__all__ = [
    "IdFallback",
    "IngestReport",
    "PromptFileError",
    "Rejection",
    "BATCH_PROMPTS_WHERE",
    "batch_key",
    "ingest_file",
    "legacy_batch_key",
    "list_inbox",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_DOTS = re.compile(r"\.{2,}")  # "..." is not allowed in a Dagster partition key
_STEM_CHARS = 60

EXIT_OK = 0
EXIT_REJECTED = 3

# WHERE clause over `prompts` selecting the prompts of batch ? (bind the batch twice): those its file contains
# (prompt_batch_members, duplicates of other batches included) and those it stored itself (rows written
# directly, e.g. by the sandbox's insert_prompts, have no membership rows).
BATCH_PROMPTS_WHERE = "batch = ? OR prompt_id IN (SELECT prompt_id FROM prompt_batch_members WHERE batch = ?)"


def batch_key(path: str | Path) -> str:
    """The prompt-batch key (a Dagster partition key) of a prompt file: its sanitised stem, "-", the first 8 hex
    digits of the sha256 of its resolved absolute path, and its sanitised suffix, e.g. "starter-1f0c9a2e.jsonl".

    Sanitising keeps [A-Za-z0-9._-] (other characters become "_", runs of dots one dot, the stem is cut to 60
    characters); the path hash keeps apart files whose names sanitise alike ("日本.jsonl", "中国.jsonl") and
    files of the same name in different folders. The same file gives the same key however it is named
    (relative path, symlink); moving it gives a new key."""
    path = Path(path)
    name = path.name
    if not name:
        raise ValueError(f"no file name in {str(path)!r}")
    suffix = path.suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    digest = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:8]
    return f"{_sanitise(stem)[:_STEM_CHARS] or '_'}-{digest}{_sanitise(suffix)}"


def legacy_batch_key(path: str | Path) -> str:
    """The key older versions gave a file (its sanitised name, no hash): partitions created before batch_key
    hashed the path still find their file through it."""
    return _UNSAFE.sub("_", Path(path).name)


def _sanitise(text: str) -> str:
    return _DOTS.sub(".", _UNSAFE.sub("_", text))


def list_inbox(inbox: str | Path, extensions: Iterable[str] = (".jsonl", ".csv", ".txt")) -> list[Path]:
    """The prompt files directly in `inbox` (not recursive), sorted by name; hidden files and names
    whose extension is not listed are skipped. A missing inbox is an error, not an empty list."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise FileNotFoundError(f"prompt inbox {inbox} does not exist or is not a directory")
    wanted = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions}
    return sorted(
        (p for p in inbox.iterdir()
         if not p.name.startswith(".") and p.suffix.lower() in wanted and p.is_file()),
        key=lambda p: p.name,
    )


@dataclass(frozen=True)
class IdFallback:
    """A row whose own id was already taken by a different prompt; it was stored under `used_id`."""

    line: int
    given_id: str
    used_id: str

    def to_dict(self) -> dict:
        return {"line": self.line, "given_id": self.given_id, "used_id": self.used_id}


@dataclass
class IngestReport:
    """What one ingestion did. `accepted` counts rows newly stored by this call; `duplicates` counts good
    rows whose text was already present (from any batch, or earlier in the same file)."""

    batch: str
    source_file: str
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    total_rows: int
    file_sha256: str = ""
    id_fallbacks: list[IdFallback] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every row was accepted or already present, 3 when some rows were rejected."""
        return EXIT_REJECTED if self.rejected else EXIT_OK

    def reason_counts(self) -> dict[str, int]:
        """Rejections grouped by the kind of reason (the text before the first colon)."""
        counts: dict[str, int] = {}
        for rejection in self.rejected:
            kind = rejection.reason.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "source_file": self.source_file,
            "file_sha256": self.file_sha256,
            "total_rows": self.total_rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [r.to_dict() for r in self.rejected],
            "id_fallbacks": [f.to_dict() for f in self.id_fallbacks],
            "exit_code": self.exit_code,
        }

    def metadata(self, max_listed: int = 20) -> dict:
        """Plain JSON-able values for display; the first `max_listed` rejections are spelled out."""
        listed = [f"line {r.line}: {r.reason}" for r in self.rejected[:max_listed]]
        if len(self.rejected) > max_listed:
            listed.append(f"... and {len(self.rejected) - max_listed} more")
        return {
            "batch": self.batch,
            "source_file": self.source_file,
            "total_rows": self.total_rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "rejection_reasons": self.reason_counts(),
            "rejected_lines": listed,
            "id_fallbacks": len(self.id_fallbacks),
        }


def ingest_file(
    warehouse: Warehouse,
    path: str | Path,
    *,
    batch: str | None = None,
    max_chars: int = 2000,
    now: datetime | None = None,
) -> IngestReport:
    """Parse one prompt file and store it as prompt batch `batch` (default: `batch_key(path)`).

    In one transaction: new prompts are inserted (texts already stored are counted as duplicates), the
    batch's membership (`prompt_batch_members`: every distinct good text of the file, new or not) is
    replaced, the file's rejections are added to `rejected_prompts` (kept for good, keyed by batch, file
    content and line, so the same file adds none twice), and its `prompt_batches` row is upserted with the
    batch's standing (prompts it brought first, duplicates, rejections), which re-ingesting leaves unchanged.
    Raises PromptFileError when the file cannot be read at all or has no rows; nothing is written then.
    """
    path = Path(path)
    batch = batch or batch_key(path)
    stamp = _naive_utc(now)
    parsed = read_prompt_file(path, max_chars=max_chars)
    source = str(path.resolve())
    distinct = _first_per_hash(parsed.rows)

    with warehouse.transaction() as con:
        existing_hashes = set(_lookup(con, "SELECT hash FROM prompts WHERE hash IN (SELECT v FROM _keys)",
                                      [r.hash for r in distinct]))
        fresh = [r for r in distinct if r.hash not in existing_hashes]
        ids, fallbacks = _assign_ids(con, fresh)
        new_prompts = pl.DataFrame(
            {
                "prompt_id": ids,
                "batch": [batch] * len(fresh),
                "source_file": [source] * len(fresh),
                "line": [r.line for r in fresh],
                "text": [r.text for r in fresh],
                "category": [r.category for r in fresh],
                "hash": [r.hash for r in fresh],
                "ingested_at": [stamp] * len(fresh),
            },
            schema={"prompt_id": pl.String, "batch": pl.String, "source_file": pl.String, "line": pl.Int32,
                    "text": pl.String, "category": pl.String, "hash": pl.String,
                    "ingested_at": pl.Datetime("us")},
        )
        insert_frame(con, "prompts", new_prompts)

        # The batch's prompts: every distinct good text of the file, whichever batch stored it first.
        stored_ids = dict(zip([r.hash for r in fresh], ids, strict=True))
        known = [r.hash for r in distinct if r.hash not in stored_ids]
        if known:
            con.register("_keys", pl.DataFrame({"v": known}, schema={"v": pl.String}).to_arrow())
            try:
                stored_ids.update(relation_frame(
                    con, "SELECT hash, prompt_id FROM prompts WHERE hash IN (SELECT v FROM _keys)").rows())
            finally:
                con.unregister("_keys")
        con.execute("DELETE FROM prompt_batch_members WHERE batch = ?", [batch]).fetchall()
        insert_frame(con, "prompt_batch_members", pl.DataFrame(
            {"batch": [batch] * len(distinct), "prompt_id": [stored_ids[r.hash] for r in distinct],
             "line": [r.line for r in distinct]},
            schema={"batch": pl.String, "prompt_id": pl.String, "line": pl.Int32},
        ))

        # Quarantine rows are never deleted; the same file content adds none twice.
        insert_frame(con, "rejected_prompts",
                     _rejections_frame(parsed.rejections, batch, source, parsed.file_sha256, stamp),
                     on_conflict="ON CONFLICT DO NOTHING")

        # The batch's standing: of its distinct good texts, those it brought first. Stable on re-ingest.
        owned = len(_lookup(con, "SELECT hash FROM prompts WHERE batch = ? AND hash IN (SELECT v FROM _keys)",
                            [r.hash for r in distinct], [batch]))
        con.execute("DELETE FROM prompt_batches WHERE batch = ?", [batch]).fetchall()
        insert_frame(con, "prompt_batches", pl.DataFrame(
            {"batch": [batch], "source_file": [source], "file_sha256": [parsed.file_sha256],
             "accepted": [owned], "duplicates": [len(parsed.rows) - owned],
             "rejected": [len(parsed.rejections)], "ingested_at": [stamp]},
            schema={"batch": pl.String, "source_file": pl.String, "file_sha256": pl.String,
                    "accepted": pl.Int32, "duplicates": pl.Int32, "rejected": pl.Int32,
                    "ingested_at": pl.Datetime("us")},
        ))

    return IngestReport(
        batch=batch,
        source_file=source,
        accepted=len(fresh),
        duplicates=len(parsed.rows) - len(fresh),
        rejected=list(parsed.rejections),
        total_rows=parsed.total_rows,
        file_sha256=parsed.file_sha256,
        id_fallbacks=fallbacks,
    )


def _naive_utc(now: datetime | None) -> datetime:
    # TIMESTAMP columns hold naive UTC.
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
    return now


def _first_per_hash(rows: list[PromptRow]) -> list[PromptRow]:
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.hash not in seen:
            seen.add(row.hash)
            out.append(row)
    return out


def _lookup(con, sql: str, keys: list[str], params: list | None = None) -> list[str]:
    """First column of `sql`, where `_keys(v)` holds `keys` (registered through Arrow, not bound one by one)."""
    if not keys:
        return []
    con.register("_keys", pl.DataFrame({"v": keys}, schema={"v": pl.String}).to_arrow())
    try:
        return relation_frame(con, sql, params).to_series(0).to_list()
    finally:
        con.unregister("_keys")


def _assign_ids(con, fresh: list[PromptRow]) -> tuple[list[str], list[IdFallback]]:
    """prompt_id per new row: the file's id, else "p_" + hash[:16]; a file id already used by a different
    prompt (stored, or earlier in this file) falls back to the hash id (the full hash if even that is taken)."""
    candidates = []
    for r in fresh:
        candidates += [r.given_id, f"p_{r.hash[:16]}", f"p_{r.hash}"]
    taken = set(_lookup(con, "SELECT prompt_id FROM prompts WHERE prompt_id IN (SELECT v FROM _keys)",
                        sorted({c for c in candidates if c})))
    ids: list[str] = []
    fallbacks: list[IdFallback] = []
    for r in fresh:
        options = [r.given_id] if r.given_id else []
        options += [f"p_{r.hash[:16]}", f"p_{r.hash}"]
        chosen = next((c for c in options if c not in taken), None)
        if chosen is None:
            raise RuntimeError(f"line {r.line}: every id for this prompt is taken ({', '.join(options)})")
        if r.given_id and chosen != r.given_id:
            fallbacks.append(IdFallback(line=r.line, given_id=r.given_id, used_id=chosen))
        taken.add(chosen)
        ids.append(chosen)
    return ids, fallbacks


def _rejections_frame(rejections: list[Rejection], batch: str, source: str, file_sha256: str,
                      stamp: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "batch": [batch] * len(rejections),
            "source_file": [source] * len(rejections),
            "file_sha256": [file_sha256] * len(rejections),
            "line": [r.line for r in rejections],
            "reason": [r.reason for r in rejections],
            "raw_excerpt": [r.excerpt for r in rejections],
            "rejected_at": [stamp] * len(rejections),
        },
        schema={"batch": pl.String, "source_file": pl.String, "file_sha256": pl.String, "line": pl.Int32,
                "reason": pl.String, "raw_excerpt": pl.String, "rejected_at": pl.Datetime("us")},
    )
