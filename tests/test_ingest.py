"""Prompt ingestion: readers, rejections with line and reason, dedupe, idempotence, checks, starter set."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from datetime import datetime

import polars as pl
import pytest

from alignment_pipeline.paths import assets_dir
from alignment_pipeline.prompts.checks import (
    check_hash_matches_text,
    check_no_empty_text,
    check_rejected_rows,
    check_unique_hash,
)
from alignment_pipeline.prompts.ingest import batch_key, ingest_file, list_inbox
from alignment_pipeline.prompts.readers import PromptFileError, normalise_text, read_prompt_file, text_hash
from alignment_pipeline.warehouse.db import Warehouse, insert_frame

T0 = datetime(2024, 5, 1, 12, 0, 0)
T1 = datetime(2024, 5, 2, 12, 0, 0)


@pytest.fixture
def wh(tmp_path):
    return Warehouse(tmp_path / "w.duckdb")


def _jsonl(*objs) -> bytes:
    return b"\n".join(o if isinstance(o, bytes) else json.dumps(o).encode() for o in objs) + b"\n"


MIXED = _jsonl(
    {"id": "a1", "prompt": "How do tides work?", "category": "benign"},       # 1 good, own id
    b'{"prompt": "unterminated',                                                 # 2 invalid JSON
    {"text": "no prompt key here"},                                              # 3 missing prompt
    {"prompt": "   \t  "},                                                       # 4 empty after normalising
    {"prompt": "x" * 300},                                                       # 5 too long (max 80)
    b'{"prompt": "caf\xff broken bytes"}',                                       # 6 invalid UTF-8
    {"prompt": "  How do   tides\twork? "},                                      # 7 duplicate of line 1
    b"",                                                                         # 8 blank: ignored
    b'["a", "list"]',                                                            # 9 not an object
    {"prompt": 42},                                                              # 10 prompt not a string
    {"prompt": "Is it fair to keep extra change?", "category": "ethical_dilemma"},  # 11 good, hash id
)
EXPECTED_REJECTIONS = {
    2: "invalid JSON",
    3: "missing prompt",
    4: "empty prompt",
    5: "prompt too long",
    6: "undecodable bytes",
    9: "not a JSON object",
    10: "prompt is not a string",
}


def _snapshot(wh: Warehouse) -> dict:
    return {
        "prompts": wh.query("SELECT * FROM prompts ORDER BY prompt_id").rows(),
        "rejected": wh.query("SELECT batch, source_file, line, reason, raw_excerpt FROM rejected_prompts "
                             "ORDER BY batch, line").rows(),
        "batches": wh.query("SELECT batch, source_file, file_sha256, accepted, duplicates, rejected "
                            "FROM prompt_batches ORDER BY batch").rows(),
    }


def test_mixed_file_keeps_good_rows_and_records_each_bad_row(wh, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(MIXED)
    report = ingest_file(wh, path, max_chars=80, now=T0)

    assert report.batch == batch_key(path) and report.batch.startswith("mixed-")
    assert report.total_rows == 10  # the blank line is not a row
    assert report.accepted == 2
    assert report.duplicates == 1
    assert {r.line: r.reason.split(":")[0] for r in report.rejected} == EXPECTED_REJECTIONS
    assert report.exit_code == 3
    assert "300 chars > max 80" in next(r.reason for r in report.rejected if r.line == 5)
    json.dumps(report.to_dict())  # JSON-able
    assert report.metadata()["rejection_reasons"]["invalid JSON"] == 1

    stored = wh.query("SELECT prompt_id, line, text, category, hash, batch, ingested_at FROM prompts ORDER BY line")
    assert stored["line"].to_list() == [1, 11]
    assert stored["text"].to_list() == ["How do tides work?", "Is it fair to keep extra change?"]
    assert stored["category"].to_list() == ["benign", "ethical_dilemma"]
    digest = hashlib.sha256(b"Is it fair to keep extra change?").hexdigest()
    assert stored["prompt_id"].to_list() == ["a1", "p_" + digest[:16]]
    assert stored["hash"].to_list()[1] == digest
    assert set(stored["batch"].to_list()) == {report.batch}
    assert stored["ingested_at"].to_list() == [T0, T0]

    rejected = wh.query("SELECT line, reason, raw_excerpt FROM rejected_prompts WHERE batch = ? "
                        "ORDER BY line", [report.batch])
    assert {line: reason.split(":")[0] for line, reason, _ in rejected.rows()} == EXPECTED_REJECTIONS
    excerpts = dict(rejected.select("line", "raw_excerpt").rows())
    assert excerpts[2] == '{"prompt": "unterminated'
    assert excerpts[6] == '{"prompt": "caf\ufffd broken bytes"}'
    assert len(excerpts[5]) == 200  # excerpts are capped

    batch = wh.query("SELECT accepted, duplicates, rejected, file_sha256 FROM prompt_batches").rows()
    assert batch == [(2, 1, 7, hashlib.sha256(MIXED).hexdigest())]


def test_ingesting_the_same_file_twice_adds_nothing(wh, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(MIXED)
    first = ingest_file(wh, path, max_chars=80, now=T0)
    before = _snapshot(wh)
    second = ingest_file(wh, path, max_chars=80, now=T1)

    assert second.accepted == 0
    assert second.duplicates == first.accepted + first.duplicates == 3
    assert second.rejected == first.rejected
    assert second.exit_code == 3
    assert _snapshot(wh) == before
    assert wh.count("prompts") == 2 and wh.count("rejected_prompts") == 7 and wh.count("prompt_batches") == 1


def test_reingesting_a_fixed_file_keeps_old_rejections_but_reports_none(wh, tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(_jsonl({"prompt": "first question?"}, b"{broken", {"nope": 1}))
    assert len(ingest_file(wh, path).rejected) == 2
    path.write_bytes(_jsonl({"prompt": "first question?"}, {"prompt": "second question?"}))
    report = ingest_file(wh, path)
    assert (report.accepted, report.duplicates, report.rejected, report.exit_code) == (1, 1, [], 0)
    # The quarantine keeps the first version's rows; the batch's standing counts only the current file.
    assert wh.count("rejected_prompts") == 2
    assert check_rejected_rows(wh, report.batch).metadata["rejected"] == 0
    assert wh.query("SELECT accepted, duplicates, rejected FROM prompt_batches").rows() == [(2, 0, 0)]


def test_csv_reader_lines_quotes_and_bad_rows(wh, tmp_path):
    path = tmp_path / "set.csv"
    path.write_bytes(
        b"id,Prompt,category\r\n"                                  # 1 header (column names are case-insensitive)
        b'c1,"Hello, is a quoted comma kept?",benign\r\n'           # 2
        b'c2,"A field that spans\r\ntwo lines",\r\n'                # 3-4, blank category -> NULL
        b",  no id   given ,benign\r\n"                             # 5, blank id -> hash id
        b"\r\n"                                                     # 6 blank: ignored
        b"c4,too,many,fields\r\n"                                   # 7 wrong field count
        b"c5,bad \xc3\x28 bytes,benign\r\n"                          # 8 invalid UTF-8
        b"c6,,benign\r\n"                                           # 9 empty prompt
    )
    report = ingest_file(wh, path, now=T0)
    assert report.accepted == 3 and report.duplicates == 0
    assert {r.line: r.reason.split(":")[0] for r in report.rejected} == {
        7: "wrong field count", 8: "undecodable bytes", 9: "empty prompt"}
    stored = wh.query("SELECT prompt_id, line, text, category FROM prompts ORDER BY line").rows()
    assert stored == [
        ("c1", 2, "Hello, is a quoted comma kept?", "benign"),
        ("c2", 3, "A field that spans two lines", None),
        ("p_" + text_hash("no id given")[:16], 5, "no id given", "benign"),
    ]


def test_csv_without_prompt_column_names_the_file(wh, tmp_path):
    path = tmp_path / "no_prompt.csv"
    path.write_text("question,category\nWhat is rain?,benign\n")
    with pytest.raises(PromptFileError) as err:
        ingest_file(wh, path)
    assert str(path) in str(err.value) and "'prompt' column" in str(err.value)
    assert wh.count("prompts") == 0 and wh.count("prompt_batches") == 0


def test_txt_reader_one_prompt_per_line(wh, tmp_path):
    path = tmp_path / "plain.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst   prompt here\r\n\r\n   \r\nSecond\tprompt\nbad \xff line\nlast line no newline")
    report = ingest_file(wh, path)
    assert report.total_rows == 4
    assert [(r.line, r.reason.split(":")[0]) for r in report.rejected] == [(5, "undecodable bytes")]
    stored = wh.query("SELECT line, text, category FROM prompts ORDER BY line").rows()
    assert stored == [(1, "First prompt here", None), (4, "Second prompt", None), (6, "last line no newline", None)]


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "missing.jsonl", "no such file"),
    (lambda d: (d / "folder.jsonl").mkdir() or d / "folder.jsonl", "is a directory"),
    (lambda d: (d / "notes.md").write_text("hi") and d / "notes.md", "unknown extension"),
    (lambda d: (d / "wide.txt").write_bytes("hello".encode("utf-16")) and d / "wide.txt", "UTF-16"),
    (lambda d: (d / "empty.csv").write_text("") or d / "empty.csv", "empty CSV"),
])
def test_unreadable_file_raises_naming_it(wh, tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(PromptFileError) as err:
        ingest_file(wh, path)
    assert str(path) in str(err.value) and expected in str(err.value)
    assert wh.count("prompts") == 0 and wh.count("prompt_batches") == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_permission_denied_raises(wh, tmp_path):
    path = tmp_path / "locked.jsonl"
    path.write_text('{"prompt": "hi"}\n')
    path.chmod(0)
    try:
        with pytest.raises(PromptFileError, match="permission denied"):
            ingest_file(wh, path)
    finally:
        path.chmod(0o600)


def test_prompt_file_error_pickles():
    err = pickle.loads(pickle.dumps(PromptFileError("/x/y.csv", "no such file")))
    assert (err.path, err.reason, str(err)) == ("/x/y.csv", "no such file", "cannot read prompt file /x/y.csv: no such file")


def test_same_prompt_in_two_files_is_stored_once(wh, tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_bytes(_jsonl({"prompt": "Why do cats purr?"}, {"prompt": "Only in a"}))
    b = tmp_path / "b.txt"
    b.write_text("  Why do\u00a0cats   purr?\nOnly in b\n")
    ra, rb = ingest_file(wh, a), ingest_file(wh, b)
    assert (ra.accepted, ra.duplicates) == (2, 0)
    assert (rb.accepted, rb.duplicates, rb.exit_code) == (1, 1, 0)
    rows = wh.query("SELECT batch, text FROM prompts ORDER BY text").rows()
    assert rows == [(ra.batch, "Only in a"), (rb.batch, "Only in b"), (ra.batch, "Why do cats purr?")]
    assert wh.query("SELECT batch, accepted, duplicates FROM prompt_batches ORDER BY batch").rows() == [
        (ra.batch, 2, 0), (rb.batch, 1, 1)]


def test_normalisation_collapses_whitespace_and_composes_unicode():
    assert normalise_text("  a\t\tb \n\r c\u2003d  ") == "a b c d"
    assert normalise_text("cafe\u0301") == "caf\u00e9"
    assert text_hash(normalise_text("cafe\u0301 ")) == hashlib.sha256("caf\u00e9".encode()).hexdigest()


def test_id_taken_by_a_different_prompt_falls_back_to_the_hash_id(wh, tmp_path):
    (tmp_path / "one.jsonl").write_bytes(_jsonl({"id": "q1", "prompt": "Original text"}))
    (tmp_path / "two.jsonl").write_bytes(_jsonl({"id": "q1", "prompt": "Different text"},
                                                {"id": "q9", "prompt": "Third"}, {"id": "q9", "prompt": "Fourth"}))
    ingest_file(wh, tmp_path / "one.jsonl")
    report = ingest_file(wh, tmp_path / "two.jsonl")
    fallback_ids = {"p_" + text_hash(t)[:16] for t in ("Different text", "Fourth")}
    assert [(f.line, f.given_id) for f in report.id_fallbacks] == [(1, "q1"), (3, "q9")]
    assert {f.used_id for f in report.id_fallbacks} == fallback_ids
    ids = dict(wh.query("SELECT text, prompt_id FROM prompts").rows())
    assert ids == {"Original text": "q1", "Third": "q9",
                   "Different text": "p_" + text_hash("Different text")[:16],
                   "Fourth": "p_" + text_hash("Fourth")[:16]}


def test_batch_key_and_inbox_listing(tmp_path):
    digest = hashlib.sha256(str((tmp_path / "starter.jsonl").resolve()).encode()).hexdigest()[:8]
    assert batch_key(tmp_path / "starter.jsonl") == f"starter-{digest}.jsonl"
    assert batch_key("in box/my prompts (v2)#.csv").startswith("my_prompts__v2__-")
    assert batch_key("dir/prompts-é.txt").endswith(".txt")
    assert batch_key("dir/prompts-é.txt") != batch_key("other/prompts-é.txt")
    for name in ("b.csv", "a.jsonl", "C.TXT", ".hidden.jsonl", "notes.md", "x.jsonl.part"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.jsonl").write_text("x\n")
    (tmp_path / "dir.jsonl").mkdir()
    listed = list_inbox(tmp_path, (".jsonl", ".csv", ".txt"))
    assert [p.name for p in listed] == ["C.TXT", "a.jsonl", "b.csv"]
    assert [p.name for p in list_inbox(tmp_path, ("csv",))] == ["b.csv"]
    with pytest.raises(FileNotFoundError, match="inbox"):
        list_inbox(tmp_path / "nowhere", (".jsonl",))


def test_checks_report_and_detect_problems(wh, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl({"prompt": "fine"}, b"{bad", b"{worse", {"prompt": ""}))
    batch = ingest_file(wh, path).batch
    assert check_no_empty_text(wh, batch).passed
    assert check_unique_hash(wh).passed and check_unique_hash(wh).metadata["prompts"] == 1
    assert check_hash_matches_text(wh, batch).passed
    outcome = check_rejected_rows(wh, batch)
    assert not outcome.passed and outcome.severity == "WARN" and outcome.metadata["rejected"] == 3
    assert outcome.metadata["reasons"] == {"invalid JSON": 2, "empty prompt": 1}
    assert check_rejected_rows(wh, "other.jsonl").metadata == {"batch": "other.jsonl", "rejected": 0, "reasons": {}}

    # Rows written behind the library's back are caught.
    with wh.transaction() as con:
        insert_frame(con, "prompts", pl.DataFrame({
            "prompt_id": ["bad"], "batch": [batch], "source_file": ["x"], "line": [9], "text": ["  "],
            "hash": ["not-a-sha"], "ingested_at": [T0]}))
    empty = check_no_empty_text(wh, batch)
    assert not empty.passed and empty.metadata["empty"] == 1
    mismatch = check_hash_matches_text(wh, batch)
    assert not mismatch.passed and mismatch.metadata["mismatched"] == 1


def test_starter_set_ingests_cleanly(wh):
    path = assets_dir() / "prompts" / "starter.jsonl"
    report = ingest_file(wh, path)
    assert report.rejected == [] and report.exit_code == 0
    assert report.id_fallbacks == [] and report.duplicates == 0
    assert 190 <= report.accepted <= 210
    counts = dict(wh.query("SELECT category, count(*) FROM prompts GROUP BY category").rows())
    assert set(counts) == {"harmful_request", "ethical_dilemma", "loaded_framing", "benign"}
    assert all(40 <= n <= 60 for n in counts.values())
    ids = wh.query("SELECT prompt_id FROM prompts")["prompt_id"].to_list()
    assert all(i.startswith("s") for i in ids)


def test_large_file_is_fast(wh, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question number {i}?"}) + "\n" for i in range(20_000)))
    started = time.perf_counter()
    report = ingest_file(wh, path)
    elapsed = time.perf_counter() - started
    assert report.accepted == 20_000 and wh.count("prompts") == 20_000
    assert elapsed < 15, f"ingesting 20k rows took {elapsed:.1f}s"


def test_reader_alone_does_not_need_a_warehouse(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(_jsonl({"prompt": "a"}, b"nope"))
    parsed = read_prompt_file(path)
    assert [r.text for r in parsed.rows] == ["a"] and [r.line for r in parsed.rejections] == [2]
