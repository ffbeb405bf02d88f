"""`alignment-pipeline sql` never blocks the pipeline: a long query runs on a private snapshot while a writer in
another process keeps writing, and it is stopped at its timeout. Several statements each print; PIVOT runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from typer.testing import CliRunner

from alignment_pipeline.cli import app
from alignment_pipeline.warehouse import QueryTimeout, Warehouse

runner = CliRunner()
LONG_QUERY = "SELECT count(*) FROM range(10000000000000)"

# A pipeline step's writes: a short write transaction every 50 ms that gives up after 1 s without its lock
# (the pipeline's steps wait longer, but a reader holding a lock for the whole query would outlast any wait).
WRITER = textwrap.dedent("""
    import sys, time
    from alignment_pipeline.warehouse import Warehouse
    warehouse = Warehouse(sys.argv[1], lock_timeout_s=1.0)
    deadline = time.monotonic() + float(sys.argv[2])
    writes = 0
    while time.monotonic() < deadline:
        with warehouse.transaction() as con:
            con.execute("CREATE TABLE IF NOT EXISTS writer_ticks (n INTEGER)")
            con.execute("INSERT INTO writer_ticks VALUES (?)", [writes])
        writes += 1
        time.sleep(0.05)
    print(writes)
""")


@pytest.fixture
def warehouse(home) -> Warehouse:
    from alignment_pipeline.paths import HomeLayout

    warehouse = Warehouse(HomeLayout(home).duckdb_path)
    warehouse.migrate()
    return warehouse


def _writer(path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_long_query_neither_blocks_a_writer_nor_outlives_its_timeout(home, warehouse):
    # the `home` fixture exports $ALIGNMENT_HOME, so the CLI reads this warehouse
    writer = _writer(warehouse.path, seconds=4.0)
    try:
        time.sleep(0.8)  # the writer is writing
        started = time.monotonic()
        result = runner.invoke(app, ["sql", "--timeout", "2", LONG_QUERY])
        elapsed = time.monotonic() - started
        out, errors = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, errors  # no "Could not set lock" while the query ran
    assert int(out) >= 20
    assert result.exit_code == 1 and "stopped after 2s" in result.output, result.output
    assert elapsed < 5, f"the query ran {elapsed:.1f}s with a 2 s timeout"
    assert warehouse.count("writer_ticks") == int(out)


def test_the_library_path_is_interrupted_and_leaves_no_snapshot(warehouse):
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="stopped after 0.5s"):
        warehouse.query_read_only_all(LONG_QUERY, timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert not list(warehouse.path.parent.glob(".sql-snapshot-*"))


def test_a_reader_does_not_hold_the_file_while_its_query_runs(warehouse):
    # A writer opens the file while a query is still running: the query holds only its snapshot.
    import threading

    failure: list[BaseException] = []

    def long_read() -> None:
        try:
            warehouse.query_read_only_all(LONG_QUERY, timeout_s=2.0)
        except QueryTimeout:
            pass
        except BaseException as exc:  # reported by the assertion below
            failure.append(exc)

    thread = threading.Thread(target=long_read)
    thread.start()
    time.sleep(0.7)
    writer = _writer(warehouse.path, seconds=0.3)
    out, errors = writer.communicate(timeout=30)
    still_reading = thread.is_alive()
    thread.join(timeout=10)
    assert still_reading, "the query was still running when the writer wrote"
    assert writer.returncode == 0 and int(out) >= 1, errors
    assert failure == []


def test_several_statements_each_print(warehouse):
    result = runner.invoke(app, ["sql", "--format", "json", "SELECT 1 AS a; SELECT 2 AS b, 3 AS c"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"statement": "SELECT 1 AS a", "rows": [{"a": 1}]},
                                         {"statement": "SELECT 2 AS b, 3 AS c", "rows": [{"b": 2, "c": 3}]}]
    table = runner.invoke(app, ["sql", "SELECT 41 + 1 AS answer; SELECT 'second' AS which"])
    assert table.exit_code == 0, table.output
    assert "42" in table.output and "second" in table.output and table.output.count("1 rows") == 2
    single = runner.invoke(app, ["sql", "--format", "json", "SELECT 1 AS a"])
    assert json.loads(single.output) == [{"a": 1}]


def test_pivot_runs_and_a_pivot_that_writes_is_refused(warehouse):
    query = ("PIVOT (SELECT * FROM (VALUES ('x', 1), ('y', 2), ('x', 3)) v(k, n)) ON k USING max(n)")
    result = runner.invoke(app, ["sql", "--format", "json", query])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"x": 3, "y": 2}]
    refused = runner.invoke(app, ["sql", "CREATE TABLE z AS PIVOT (SELECT 'x' AS k, 1 AS n) ON k USING sum(n)"])
    assert refused.exit_code == 1 and "refused" in refused.output
