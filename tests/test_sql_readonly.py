"""`alignment-pipeline sql` is read-only for real: the warehouse is opened read-only with external access off,
statements are judged by DuckDB's parser, nothing is migrated or created, and output is complete."""

import hashlib
import json
import shutil

import duckdb
import pytest
from typer.testing import CliRunner

from alignment_pipeline.cli import app
from alignment_pipeline.paths import sql_dir
from alignment_pipeline.warehouse import (
    ReadOnlyViolation,
    Warehouse,
    WarehouseError,
    WarehouseNotReady,
    check_read_only,
)

runner = CliRunner()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def filled(home, tmp_path):
    """A home with a migrated warehouse holding two prompts, and an mlflow.db next to it."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("What makes a promise binding?\nIs [red]honesty[/red] always kind?\n")
    result = runner.invoke(app, ["ingest", str(prompts)])
    assert result.exit_code == 0, result.output
    (home / "mlflow.db").write_bytes(b"not to be touched")
    return home


def _writes(target):
    return [
        f"SELECT '--'; COPY (SELECT * FROM prompts) TO '{target}'",
        f"SELECT '/*'; COPY (SELECT * FROM prompts) TO '{target}' -- */",
        f"EXPLAIN ANALYZE COPY (SELECT * FROM prompts) TO '{target}'",
        f"EXPLAIN COPY (SELECT 1) TO '{target}'",
        f"/* comment */ COPY prompts TO '{target}'",
        f"ATTACH '{target}' AS x",
        "SET enable_external_access = true",
        "SET threads = 1",
        "RESET threads",
        "FORCE CHECKPOINT",
        "CHECKPOINT",
        "INSTALL httpfs",
        "LOAD httpfs",
        "PRAGMA version",
        "CALL pragma_version()",
        "BEGIN TRANSACTION",
        "DELETE FROM prompts",
        "WITH x AS (SELECT 1) DELETE FROM prompts",
        "CREATE TEMP TABLE t AS SELECT 1",
        "SELECT 1; DELETE FROM prompts",
    ]


def test_every_writing_statement_is_refused_and_writes_nothing(filled, tmp_path):
    target = tmp_path / "leak.csv"
    warehouse, mlflow = filled / "warehouse.duckdb", filled / "mlflow.db"
    before, mlflow_before = _sha(warehouse), _sha(mlflow)
    statements = _writes(target) + [f"SELECT '--'; COPY (SELECT 'x') TO '{mlflow}'",
                                    f"SELECT '--'; COPY (SELECT 'x') TO '{warehouse}'"]
    for statement in statements:
        refused = runner.invoke(app, ["sql", statement])
        assert refused.exit_code == 1, (statement, refused.output)
        assert "refused" in refused.output, (statement, refused.output)
        assert not target.exists(), statement
    assert _sha(mlflow) == mlflow_before and mlflow.read_bytes() == b"not to be touched"
    assert _sha(warehouse) == before
    counted = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM prompts", "--format", "json"])
    assert json.loads(counted.output) == [{"n": 2}]


def test_refusal_names_the_statement_type(filled, tmp_path):
    out = runner.invoke(app, ["sql", f"SELECT '--'; COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'"]).output
    assert "COPY statement" in out
    out = runner.invoke(app, ["sql", f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'"]).output
    assert "EXPLAIN COPY statement" in out
    assert "SET statement" in runner.invoke(app, ["sql", "SET threads = 1"]).output


def test_the_connection_itself_refuses_files_and_settings(filled, tmp_path):
    """Second guard: even a statement that got past the parser check cannot touch a file or unlock settings."""
    target = tmp_path / "leak.csv"
    warehouse = Warehouse(filled / "warehouse.duckdb")
    before = _sha(warehouse.path)
    with warehouse.connect_read_only() as con:
        for statement in (f"COPY (SELECT 1) TO '{target}'", f"SELECT * FROM read_csv('{filled / 'mlflow.db'}')",
                          f"ATTACH '{target}'", "SET enable_external_access = true", "SET threads = 1",
                          "CREATE TABLE t (a INT)"):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
    assert not target.exists()
    assert _sha(warehouse.path) == before
    with pytest.raises(ReadOnlyViolation, match="disabled"):
        warehouse.query_read_only(f"SELECT * FROM read_csv('{filled / 'mlflow.db'}')")


def test_select_leaves_the_warehouse_bytes_unchanged(filled):
    warehouse = filled / "warehouse.duckdb"
    before = _sha(warehouse)
    for args in (["sql", "SELECT 1"], ["sql", "--name", "prompt_counts", "--format", "csv"],
                 ["sql", "SELECT * FROM benchmark_table", "--format", "json"],
                 ["sql", "SELECT count(*) FROM samples_pairs"], ["sql", "EXPLAIN SELECT * FROM samples_sppo"],
                 ["sql", "EXPLAIN ANALYZE SELECT * FROM prompts"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert _sha(warehouse) == before
    assert not (filled / "warehouse.duckdb.wal").exists()


def test_select_like_statements_run(filled):
    for statement in ("SELECT 'x; DELETE FROM prompts' AS s", "SELECT 1 -- ; DROP TABLE prompts",
                      "/* DELETE */ SELECT 1", "WITH x AS (SELECT 1 AS a) SELECT * FROM x", "FROM prompts",
                      "DESCRIBE prompts", "SHOW TABLES", "EXPLAIN (FORMAT json) SELECT 1",
                      "/* é */ EXPLAIN ANALYZE SELECT 'ü'", "SELECT samples_format_prompt('a', '')"):
        result = runner.invoke(app, ["sql", statement, "--format", "json"])
        assert result.exit_code == 0, (statement, result.output)


def test_blob_and_nested_columns_as_csv_and_json(filled):
    blob = runner.invoke(app, ["sql", r"SELECT '\x00\xFF'::BLOB AS b", "--format", "csv"])
    assert blob.exit_code == 0, blob.output
    assert blob.output == "b\n\\x00\\xFF\n"
    query = r"SELECT 1 AS a, '\x00\xFFx\x27'::BLOB AS b, NULL::BLOB AS n, [1, 2] AS l, {'k': 'v'} AS s"
    csv = runner.invoke(app, ["sql", query, "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    assert csv.output.splitlines() == ["a,b,n,l,s", r'1,\x00\xFFx\x27,,"[1, 2]","{""k"": ""v""}"']
    # the text is DuckDB's own rendering of the BLOB, so it reads back as the same bytes
    assert duckdb.connect().execute(r"SELECT '\x00\xFFx\x27'::BLOB::VARCHAR").fetchone() == (r"\x00\xFFx\x27",)
    as_json = runner.invoke(app, ["sql", query, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == [{"a": 1, "b": r"\x00\xFFx\x27", "n": None, "l": [1, 2], "s": {"k": "v"}}]
    table = runner.invoke(app, ["sql", query])
    assert table.exit_code == 0 and r"\x00\xFFx\x27" in table.output


def test_piped_table_keeps_full_names_and_values(filled):
    names = [f"Status of the warehouse column number {i}" for i in range(4)]
    value = "a value long enough that an 80 column terminal would have to cut or wrap it somewhere"
    query = "SELECT " + ", ".join(f"'{value}' AS \"{n}\"" for n in names)
    result = runner.invoke(app, ["sql", query])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if names[0] in line)
    assert all(n in header for n in names)
    assert any(line.count(value) == 4 for line in lines)
    # values are text, not rich markup
    prompts = runner.invoke(app, ["sql", "SELECT text FROM prompts ORDER BY line"])
    assert "Is [red]honesty[/red] always kind?" in prompts.output


def test_missing_home_is_an_error_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNMENT_HOME", raising=False)
    nope = tmp_path / "no-such-home"
    result = runner.invoke(app, ["--home", str(nope), "sql", "SELECT 1"])
    assert result.exit_code != 0
    assert str(nope) in result.output
    assert not nope.exists()


def test_home_without_warehouse_is_an_error_and_creates_no_database(home):
    home.mkdir(parents=True)
    result = runner.invoke(app, ["sql", "SELECT 1"])
    assert result.exit_code == 1
    assert str(home / "warehouse.duckdb") in result.output and "ingest" in result.output
    assert not (home / "warehouse.duckdb").exists()
    # listing the named queries needs no warehouse; an unknown name is still reported as such
    assert runner.invoke(app, ["sql", "--list"]).exit_code == 0
    assert "no named query" in runner.invoke(app, ["sql", "--name", "nope"]).output
    assert not (home / "warehouse.duckdb").exists()


def test_outdated_or_missing_schema_is_reported_not_migrated(tmp_path):
    old_root = tmp_path / "sql_old"
    shutil.copytree(sql_dir(), old_root)
    for schema in ("050_benchmarks.sql", "051_benchmark_items.sql"):
        (old_root / "schema" / schema).unlink()
    for view in ("benchmark_table.sql", "benchmark_00_paper.sql"):
        (old_root / "views" / view).unlink()
    Warehouse(tmp_path / "old.duckdb", sql_root=old_root).migrate()
    path = tmp_path / "old.duckdb"
    before = _sha(path)
    with pytest.raises(WarehouseNotReady, match=r"050_benchmarks\.sql.*alignment-pipeline ingest"):
        Warehouse(path).query_read_only("SELECT 1")
    assert _sha(path) == before

    # schema files all applied, but sql/views changed since: stale views are reported too
    current = tmp_path / "sql_now"
    shutil.copytree(sql_dir(), current)
    Warehouse(tmp_path / "now.duckdb", sql_root=current).migrate()
    assert Warehouse(tmp_path / "now.duckdb", sql_root=current).query_read_only("SELECT 1 AS a").item() == 1
    view = current / "views" / "samples_pairs.sql"
    view.write_text(view.read_text() + "\n-- edited\n")
    with pytest.raises(WarehouseNotReady, match="outdated views"):
        Warehouse(tmp_path / "now.duckdb", sql_root=current).query_read_only("SELECT 1")

    duckdb.connect(str(tmp_path / "bare.duckdb")).close()
    with pytest.raises(WarehouseNotReady, match="no schema"):
        Warehouse(tmp_path / "bare.duckdb").query_read_only("SELECT 1")


def test_check_read_only_uses_the_parser():
    for ok in ("SELECT 'DELETE FROM t; --'", "select 1;", "VALUES (1)", "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1",
               "EXPLAIN (ANALYZE, FORMAT json) SELECT 1", "SELECT 1; SELECT 2",
               "/* a */ EXPLAIN /* b */ ANALYZE -- c\n SELECT 1", "PIVOT t ON a", "PIVOT t ON a USING sum(b)",
               "SELECT * FROM (PIVOT t ON a USING sum(b)) -- CREATE", "WITH p AS (PIVOT t ON a) FROM p"):
        check_read_only(ok)
    for bad, kind in (("SELECT '--'; COPY t TO 'x.csv'", "COPY"), ("EXPLAIN ANALYZE COPY t TO 'x.csv'", "EXPLAIN COPY"),
                      ("EXPLAIN DELETE FROM t", "EXPLAIN DELETE"),
                      ("EXPLAIN /* SELECT */ ANALYZE -- SELECT\n COPY t TO 'x.csv'", "EXPLAIN COPY"), ("SET threads = 1", "SET"),
                      ("FORCE CHECKPOINT", "CALL"), ("LOAD httpfs", "LOAD"),
                      ("CREATE TABLE z AS PIVOT t ON a", "MULTI"), ("INSERT INTO t PIVOT t ON a", "MULTI"),
                      ("COPY (PIVOT t ON a) TO 'x.csv'", "MULTI"), ("EXPLAIN PIVOT t ON a", "MULTI"),
                      ("WITH p AS (PIVOT t ON a) INSERT INTO t FROM p", "MULTI")):
        with pytest.raises(ReadOnlyViolation, match=f"refused: {kind} statement"):
            check_read_only(bad)
    with pytest.raises(WarehouseError, match="empty"):
        check_read_only(" ; -- nothing")
    with pytest.raises(duckdb.ParserException):
        check_read_only("SELEC 1")


def test_writers_and_library_reads_still_work_beside_the_read_only_path(filled):
    """Library reads (query) still migrate and accept parameters; writers still write after a read-only query."""
    import polars as pl

    warehouse = Warehouse(filled / "warehouse.duckdb")
    assert warehouse.query_read_only("SELECT count(*) FROM prompts").item() == 2
    assert warehouse.query("SELECT count(*) FROM prompts WHERE line = ?", [1]).item() == 1
    with pytest.raises(ReadOnlyViolation):
        warehouse.query("DELETE FROM prompts")
    frame = warehouse.query("SELECT * FROM prompts WHERE line = 1")
    warehouse.replace_rows("prompts", frame.with_columns(pl.lit("changed").alias("text")), where="line = 1")
    assert warehouse.query_read_only("SELECT text FROM prompts WHERE line = 1").item() == "changed"


def test_sql_does_not_load_dagster(tmp_path):
    """`sql` reads the warehouse through the library alone: Dagster (seconds to import) stays unloaded."""
    import subprocess
    import sys

    from alignment_pipeline.warehouse import Warehouse

    home = tmp_path / "home"
    home.mkdir()
    Warehouse(home / "warehouse.duckdb").migrate()
    code = ("import sys; from typer.testing import CliRunner; from alignment_pipeline.cli import app; "
            f"r = CliRunner().invoke(app, ['--home', {str(home)!r}, 'sql', 'SELECT 41 + 1 AS answer']); "
            "print(r.exit_code, 'dagster' in sys.modules, r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("0 False") and "42" in out, out
