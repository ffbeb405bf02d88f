"""Prompt ingestion keeps every record: odd Unicode, colliding file names, garbage text, empty files, batches
made only of prompts another batch stored first, and a warehouse created before the membership table."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.partitions.utils.base import raise_error_on_invalid_partition_key_substring
from typer.testing import CliRunner

from alignment_pipeline.cli import app
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.defs.sensors import new_prompt_files
from alignment_pipeline.paths import sql_dir
from alignment_pipeline.prompts.checks import (
    check_hash_matches_text,
    check_no_empty_text,
    check_rejected_rows,
)
from alignment_pipeline.prompts.ingest import batch_key, ingest_file
from alignment_pipeline.prompts.readers import PromptFileError, text_hash
from alignment_pipeline.sandbox.store import insert_prompts, load_prompts
from alignment_pipeline.warehouse.db import Warehouse

T0 = datetime(2024, 5, 1, 12, 0, 0)
runner = CliRunner()


@pytest.fixture
def wh(tmp_path):
    return Warehouse(tmp_path / "w.duckdb")


def _rows(*prompts: str) -> str:
    return "".join(json.dumps({"prompt": p}) + "\n" for p in prompts)


def _kinds(report) -> dict[int, str]:
    return {r.line: r.reason.split(":")[0] for r in report.rejected}


# -- 1. lone surrogates ---------------------------------------------------------------------------------------

def test_lone_surrogate_row_is_quarantined_and_good_rows_kept(wh, tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"prompt": "A fine question?"}\n'
                    '{"prompt": "broken \\ud800 text"}\n'         # JSON escape of a lone surrogate
                    '{"prompt": "fine text", "id": "\\udfff"}\n'  # in the id too
                    '{"prompt": "An emoji pair is fine \\ud83d\\ude00"}\n', encoding="ascii")
    report = ingest_file(wh, path)
    assert _kinds(report) == {2: "invalid unicode", 3: "invalid unicode"}
    assert "U+D800" in report.rejected[0].reason
    assert report.accepted == 2 and report.exit_code == 3
    assert sorted(wh.query("SELECT text FROM prompts")["text"].to_list()) == [
        "A fine question?", "An emoji pair is fine \U0001F600"]
    stored = wh.query("SELECT line, reason FROM rejected_prompts WHERE batch = ? ORDER BY line", [report.batch])
    assert stored["line"].to_list() == [2, 3]


def test_cli_ingest_of_a_surrogate_file_exits_3_not_1(home, tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "ok?"}\n{"prompt": "\\ud800"}\n')
    result = runner.invoke(app, ["ingest", str(path), "--json"])
    assert result.exit_code == 3, result.output
    assert json.loads(result.output)[0]["accepted"] == 1


# -- 2. batch keys that cannot collide, quarantine rows that never disappear ----------------------------------

def test_batch_keys_do_not_collide_and_stay_valid_partition_keys(tmp_path, monkeypatch):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    same = {batch_key(tmp_path / "d1" / "same.jsonl"), batch_key(tmp_path / "d2" / "same.jsonl")}
    assert len(same) == 2 and all(k.startswith("same-") and k.endswith(".jsonl") for k in same)
    cjk = {batch_key(tmp_path / "日本.jsonl"), batch_key(tmp_path / "中国.jsonl")}
    assert len(cjk) == 2
    odd = batch_key(tmp_path / "a...b\x07 c.jsonl")
    for key in [*same, *cjk, odd, batch_key(tmp_path / ("x" * 300 + ".csv"))]:
        assert len(key) <= 80
        raise_error_on_invalid_partition_key_substring([key])  # Dagster accepts it
        assert "..." not in key and all(c.isascii() and (c.isalnum() or c in "._-") for c in key)
    # The same file keeps its key however the path is spelled.
    assert batch_key(tmp_path / "d2" / ".." / "d1" / "same.jsonl") == batch_key(tmp_path / "d1" / "same.jsonl")
    monkeypatch.chdir(tmp_path)
    assert batch_key(Path("d1") / "same.jsonl") == batch_key(tmp_path / "d1" / "same.jsonl")


def test_same_file_name_in_two_folders_keeps_both_quarantines(wh, tmp_path):
    reports = []
    for folder, bad in (("d1", "{broken one"), ("d2", "{broken two")):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "same.jsonl"
        path.write_text(f'{{"prompt": "Question from {folder}?"}}\n{bad}\n')
        reports.append(ingest_file(wh, path))
    assert reports[0].batch != reports[1].batch
    assert wh.count("rejected_prompts") == 2
    assert wh.count("prompt_batches") == 2
    for report in reports:
        assert check_rejected_rows(wh, report.batch).metadata["rejected"] == 1
        assert load_prompts(wh, report.batch)[0][1].startswith("Question from")


def test_quarantine_rows_are_kept_and_not_duplicated(wh, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"prompt": "fine"}\n{bad\n')
    first = ingest_file(wh, path)
    ingest_file(wh, path)
    assert wh.count("rejected_prompts") == 1  # same file again: nothing added
    path.write_text('{"prompt": "fine"}\n{"prompt": "fixed"}\n{worse\n')
    ingest_file(wh, path)
    rows = wh.query("SELECT line, reason FROM rejected_prompts WHERE batch = ? ORDER BY line, reason",
                    [first.batch]).rows()
    assert [line for line, _ in rows] == [2, 3]  # the first version's rejection is still there
    assert check_rejected_rows(wh, first.batch).metadata["rejected"] == 1


def test_sensor_gives_two_partitions_for_names_that_sanitise_alike(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("日本.jsonl", "中国.jsonl"):
        (inbox / name).write_text('{"prompt": "hello?"}\n')
    resource = PipelineResource(home=str(tmp_path / "home"), inbox=str(inbox))
    with dg.instance_for_test() as instance:
        result = new_prompt_files(dg.build_sensor_context(instance=instance, resources={"pipeline": resource}))
    keys = [r.partition_key for r in result.run_requests]
    assert len(set(keys)) == 2 and set(keys) == {batch_key(inbox / "日本.jsonl"), batch_key(inbox / "中国.jsonl")}


# -- 3. garbage text ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, label", [("utf-16-le", "UTF-16-LE"), ("utf-16-be", "UTF-16-BE"),
                                             ("utf-32-le", "UTF-32")])
@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_wide_encoding_without_bom_is_rejected_as_a_whole_file(wh, tmp_path, encoding, label, suffix):
    path = tmp_path / f"wide{suffix}"
    body = {".txt": "How do tides work?\nWhy is the sky blue?\n", ".jsonl": _rows("How do tides work?"),
            ".csv": "prompt\nHow do tides work?\n"}[suffix]
    path.write_bytes(body.encode(encoding))
    with pytest.raises(PromptFileError) as err:
        ingest_file(wh, path)
    assert str(path) in str(err.value) and label in str(err.value) and "without a BOM" in str(err.value)
    assert wh.count("prompts") == 0 and wh.count("prompt_batches") == 0


def test_control_characters_and_invisible_prompts_are_rejected(wh, tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_text(_rows(
        "nul\x00inside",                 # 1 NUL
        "\x1b[31mred\x1b[0m",            # 2 ESC (terminal escape)
        "bell\x07",                      # 3 BEL
        "del\x7f",                       # 4 DEL
        "c1\x85control",                 # 5 C1 control
        "sep\x1cfile separator",         # 6 \x1c: Python treats it as whitespace, still a control
        "\u200b\u200c\u200d",            # 7 zero-width only
        "\ufeff \u2060\u00ad",           # 8 BOM, word joiner, soft hyphen
        "\u3164\u2800",                  # 9 Hangul filler, blank braille
        "\u0301\ufe0f",                  # 10 lone combining mark and variation selector
        "tabs\tand\r\nnewlines\x0bok",   # 11 ordinary whitespace: accepted
        "\U0001F469\u200d\U0001F4BB zero-width joiner inside an emoji is fine",  # 12 accepted
    ) + json.dumps({"prompt": "fine", "category": "a\x00b"}) + "\n"                # 13 control in category
      + json.dumps({"prompt": "fine too", "id": "x\x01"}) + "\n")                  # 14 control in id
    report = ingest_file(wh, path)
    kinds = _kinds(report)
    assert kinds == {1: "control character", 2: "control character", 3: "control character",
                     4: "control character", 5: "control character", 6: "control character",
                     7: "no visible characters", 8: "no visible characters", 9: "no visible characters",
                     10: "no visible characters", 13: "control character", 14: "control character"}
    assert "U+0000 (NUL)" in next(r.reason for r in report.rejected if r.line == 1)
    assert sorted(wh.query("SELECT line FROM prompts")["line"].to_list()) == [11, 12]
    assert wh.count("prompts", "regexp_matches(text, '[\\x00-\\x08\\x0e-\\x1f\\x7f]')") == 0


def test_txt_and_csv_lines_with_nul_bytes_are_rejected_one_by_one(wh, tmp_path):
    txt = tmp_path / "n.txt"
    txt.write_bytes(b"A perfectly normal question about tides?\nbad\x00line\nAnother normal question here?\n")
    report = ingest_file(wh, txt)
    assert _kinds(report) == {2: "control character"} and report.accepted == 2
    csv = tmp_path / "n.csv"
    csv.write_bytes(b"prompt,category\nA question long enough to matter?,x\nnul\x00here,y\n")
    report = ingest_file(wh, csv)
    assert list(_kinds(report)) == [3] and report.accepted == 1
    assert wh.count("prompts", "contains(text, chr(0))") == 0


# -- 4. empty files -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", b""), ("blank.jsonl", b"\n  \n\n"), ("empty.txt", b""), ("bom.txt", b"\xef\xbb\xbf\n"),
    ("empty.csv", b""), ("header.csv", b"prompt,category\n\n"), ("empty.ndjson", b""),
])
def test_empty_file_of_any_format_is_an_error_naming_it(wh, tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError) as err:
        ingest_file(wh, path)
    assert str(path) in str(err.value) and "empty" in str(err.value)
    assert wh.count("prompt_batches") == 0


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv", "empty.txt"])
def test_cli_empty_file_exits_2(home, tmp_path, name):
    path = tmp_path / name
    path.write_text("")
    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 2, result.output
    assert name in result.output


# -- 5. a batch owns its prompts even when another batch stored them first ------------------------------------

def test_batch_of_only_duplicates_still_has_its_prompts(wh, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.txt"
    a.write_text(_rows("Why do cats purr?", "Is lying ever right?", "Only in a"))
    b.write_text("Is lying   ever right?\nWhy do cats purr?\nWhy do cats purr?\n")
    ra = ingest_file(wh, a)
    rb = ingest_file(wh, b)
    assert (rb.accepted, rb.duplicates) == (0, 3)
    assert wh.count("prompts") == 3  # dedup across batches stays: a text is stored once
    assert wh.query("SELECT accepted, duplicates FROM prompt_batches WHERE batch = ?", [rb.batch]).rows() == [(0, 3)]

    ids = dict(wh.query("SELECT text, prompt_id FROM prompts").rows())
    assert load_prompts(wh, rb.batch) == [(ids["Is lying ever right?"], "Is lying ever right?"),
                                          (ids["Why do cats purr?"], "Why do cats purr?")]  # b's file order
    assert [t for _, t in load_prompts(wh, ra.batch)] == ["Why do cats purr?", "Is lying ever right?", "Only in a"]
    empty = check_no_empty_text(wh, rb.batch)
    assert empty.passed and empty.metadata["prompts"] == 2
    assert check_hash_matches_text(wh, rb.batch).metadata["prompts"] == 2

    before = wh.query("SELECT * FROM prompt_batch_members ORDER BY batch, line").rows()
    ingest_file(wh, b)
    assert wh.query("SELECT * FROM prompt_batch_members ORDER BY batch, line").rows() == before


def test_prompts_written_directly_still_load(wh):
    insert_prompts(wh, "bench", ["one?", "two?"])
    assert [t for _, t in load_prompts(wh, "bench")] == ["one?", "two?"]
    with pytest.raises(ValueError, match="ingest it first"):
        load_prompts(wh, "nothing-here")


def test_warehouse_from_before_the_membership_table_is_migrated(tmp_path):
    old_root = tmp_path / "old_sql"
    (old_root / "schema").mkdir(parents=True)
    (old_root / "views").mkdir()
    shutil.copy(sql_dir() / "schema" / "010_prompts.sql", old_root / "schema")
    path = tmp_path / "old.duckdb"
    old = Warehouse(path, sql_root=old_root)
    with old.transaction() as con:
        con.execute("INSERT INTO prompts VALUES ('p1', 'old.jsonl', '/x/old.jsonl', 3, 'Old prompt', NULL, ?, ?)",
                    [text_hash("Old prompt"), T0])
        con.execute("INSERT INTO rejected_prompts VALUES ('old.jsonl', '/x/old.jsonl', 1, 'invalid JSON: x', '{', ?)",
                    [T0])
        con.execute("INSERT INTO prompt_batches VALUES ('old.jsonl', '/x/old.jsonl', 'abc', 1, 0, 1, ?)", [T0])

    new = Warehouse(path)
    assert "011_prompt_batch_members.sql" in new.migrate()
    assert new.query("SELECT batch, prompt_id, line FROM prompt_batch_members").rows() == [("old.jsonl", "p1", 3)]
    assert new.query("SELECT batch, file_sha256, line, reason FROM rejected_prompts").rows() == [
        ("old.jsonl", "abc", 1, "invalid JSON: x")]
    assert load_prompts(new, "old.jsonl") == [("p1", "Old prompt")]
    assert check_rejected_rows(new, "old.jsonl").metadata["rejected"] == 1
    assert new.migrate() == []  # applied once
