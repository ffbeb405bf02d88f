"""The command line: ingest exit codes, read-only SQL, named queries."""

import json

from typer.testing import CliRunner

from alignment_pipeline.cli import app

runner = CliRunner()


def _mixed(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "Is honesty always kind?"}\n{"prompt": 5}\n\n{"prompt": "Is  honesty always kind?"}\n'
                    '{"id": "x"}\n')
    return path


def test_ingest_mixed_file_exits_3_then_adds_nothing(home, tmp_path):
    path = _mixed(tmp_path)
    first = runner.invoke(app, ["ingest", str(path), "--json"])
    assert first.exit_code == 3, first.output
    report = json.loads(first.output)[0]
    assert report["accepted"] == 1 and report["duplicates"] == 1
    assert [(r["line"], r["reason"].split(":")[0]) for r in report["rejected"]] == [
        (2, "prompt is not a string"), (5, "missing prompt")]

    again = runner.invoke(app, ["ingest", str(path), "--json"])
    assert again.exit_code == 3
    assert json.loads(again.output)[0]["accepted"] == 0

    counted = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM prompts", "--format", "json"])
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.output) == [{"n": 1}]
    rejected = runner.invoke(app, ["sql", "--name", "rejected_rows", "--format", "csv"])
    assert rejected.exit_code == 0 and rejected.output.count("\n") == 3  # header + 2 rows


def test_ingest_clean_file_exits_0_and_unreadable_exits_2(home, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("What makes a promise binding?\nHow do bees communicate?\n")
    assert runner.invoke(app, ["ingest", str(good)]).exit_code == 0
    assert runner.invoke(app, ["ingest", str(good)]).exit_code == 0  # already present is fine
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
    assert "nope.jsonl" in missing.output


def test_sql_refuses_writes_and_deletes_nothing(home, tmp_path):
    runner.invoke(app, ["ingest", str(_mixed(tmp_path))])
    for statement in ("DELETE FROM prompts", "  drop table prompts", "WITH x AS (SELECT 1) DELETE FROM prompts",
                      "SELECT 1; DELETE FROM prompts", "COPY prompts TO '/tmp/leak.csv'"):
        refused = runner.invoke(app, ["sql", statement])
        assert refused.exit_code == 1, statement
        assert "refused" in refused.output
    counted = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM prompts", "--format", "json"])
    assert json.loads(counted.output) == [{"n": 1}]


def test_sql_named_query_list_and_unknown_name(home):
    listed = runner.invoke(app, ["sql", "--list"])
    assert listed.exit_code == 0 and "rejected_rows" in listed.output
    unknown = runner.invoke(app, ["sql", "--name", "no_such_query"])
    assert unknown.exit_code == 1 and "no named query" in unknown.output


def test_config_show_prints_resolved_settings_and_profile_changes(home, tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNMENT_SETTINGS", raising=False)
    shown = runner.invoke(app, ["config", "show"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("profile: smoke (") and "\ntraining:\n" in shown.output
    assert "changes from the defaults" not in shown.output

    settings = tmp_path / "settings.yaml"
    settings.write_text("prompts:\n  max_chars: 77\n")
    changed = runner.invoke(app, ["config", "show", "--profile", "paper", "--settings", str(settings), "--changes"])
    assert changed.exit_code == 0, changed.output
    assert changed.output.startswith("profile: paper (")
    assert "max_chars: 77  (default: 2000)" in changed.output
    described, profile_yaml = changed.output.split("# profile paper: changes from the defaults\n")
    import yaml

    from alignment_pipeline.config import profile_overrides

    assert yaml.safe_load(profile_yaml) == profile_overrides("paper")


def test_config_show_refuses_unknown_profile_and_bad_settings(home, tmp_path):
    unknown = runner.invoke(app, ["config", "show", "--profile", "nope"])
    assert unknown.exit_code == 2 and "unknown profile 'nope'" in unknown.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense: 1\n")
    refused = runner.invoke(app, ["config", "show", "--settings", str(bad)])
    assert refused.exit_code == 2 and "unknown section" in refused.output
