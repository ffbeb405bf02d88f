"""The one module that owns DuckDB connections and writes.

DuckDB lets one process open a file read-write. Dagster steps run in separate processes, so writers are
serialised by the orchestration layer (a pool plus an executor tag limit); here connections stay short and a
lock held by another process is waited out with backoff rather than failing the step.

`Warehouse.query_read_only` (the `alignment-pipeline sql` command) is the strict read path: the file is opened
read-only with external access disabled and the configuration locked, nothing is migrated or created, and each
statement is judged by DuckDB's own parser (only SELECT, or EXPLAIN of a SELECT, runs).

It never blocks the pipeline: DuckDB lets a file be open either by one read-write process or by read-only ones,
so a read-only connection held for a long query would make every writer's lock fail. The strict path therefore
holds the file only while it copies it (and its WAL) into a private snapshot, which is a short wait for a writer,
and runs the user's statements on that copy, each interrupted once the query timeout is spent.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from alignment_pipeline.paths import sql_dir

_LOCK_MARKERS = ("Could not set lock on file", "Conflicting lock is held", "database is locked")


class WarehouseError(RuntimeError):
    pass


class ReadOnlyViolation(WarehouseError):
    """A statement given to a read-only entry point tried to change the warehouse."""


class WarehouseNotReady(WarehouseError):
    """The strict read-only path found no warehouse file, or one whose schema is older than sql/."""


class QueryTimeout(WarehouseError):
    """A user query ran past its timeout and was interrupted."""


# The strict read-only connection: no file outside the warehouse can be read or written (COPY TO, ATTACH,
# read_csv, INSTALL/LOAD) and no extension is fetched; `_open` then locks the configuration, so no statement
# can change these settings afterwards.
_READ_ONLY_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}
_RUN_A_WRITER = "run a command that writes first (e.g. `alignment-pipeline ingest`) to create or migrate it"


class Warehouse:
    def __init__(self, path: str | Path, *, sql_root: str | Path | None = None, lock_timeout_s: float = 120.0):
        self.path = Path(path)
        self.sql_root = Path(sql_root) if sql_root else sql_dir()
        self.lock_timeout_s = lock_timeout_s
        self._migrated = False

    # -- connections -------------------------------------------------------------------------------
    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; the schema is applied before the first one is handed out."""
        if not self._migrated:
            self.migrate()
        con = self._open(read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection inside one transaction: all of it lands, or none of it."""
        with self.connect() as con, in_transaction(con):
            yield con

    @contextmanager
    def connect_read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The strict read-only connection, to a private snapshot of the warehouse (see the module doc): the file
        must exist and be migrated (nothing is created or migrated here, so the file's bytes never change);
        external access is off and the configuration locked. WarehouseNotReady says what is missing. (DuckDB
        shares one database per file within a process, so this cannot be opened while this process holds an
        ordinary connection to the same file.)"""
        if not self.path.is_file():
            raise WarehouseNotReady(f"no warehouse at {self.path}: check --home / $ALIGNMENT_HOME, or "
                                    f"{_RUN_A_WRITER}")
        with _snapshot_dir(self.path.parent) as tmp:
            copy = self.snapshot(Path(tmp))
            con = _connect_strict(copy)
            try:
                self._check_schema(con)
                yield con
            finally:
                con.close()

    def snapshot(self, into: Path) -> Path:
        """Copy the warehouse file (and its WAL, if a writer left one) into `into` and return the copy. The file
        is held with a read-only connection while it is copied, so no writer changes it half way (a writer
        waiting for its lock waits out the copy, never a query)."""
        holder = self._open(read_only=True)
        try:
            copy = into / self.path.name
            shutil.copyfile(self.path, copy)
            wal = self.path.with_name(self.path.name + ".wal")
            if wal.is_file():
                shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        finally:
            holder.close()
        return copy

    def _open(self, *, read_only: bool, config: dict | None = None) -> duckdb.DuckDBPyConnection:
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only, config=config or {})
                # Library calls print nothing: no progress bar on long queries.
                con.execute("SET enable_progress_bar = false")
                if config is not None:  # the strict read-only connection: no SET/RESET from here on
                    con.execute("SET lock_configuration = true")
                return con
            except duckdb.IOException as exc:
                if not any(m in str(exc) for m in _LOCK_MARKERS) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- schema ------------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply sql/schema/*.sql in name order, each once (recorded in schema_version), then (re)create
        every view in sql/views/. Idempotent; returns the schema files applied now."""
        applied_now: list[str] = []
        con = self._open(read_only=False)
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
            )
            done = {row[0] for row in con.execute("SELECT name FROM schema_version").fetchall()}
            for file in sorted((self.sql_root / "schema").glob("*.sql")):
                if file.name in done:
                    continue
                try:
                    with in_transaction(con):
                        con.execute(file.read_text())
                        con.execute("INSERT INTO schema_version (name) VALUES (?)", [file.name])
                except duckdb.Error as exc:
                    raise WarehouseError(f"schema file {file} failed: {exc}") from exc
                applied_now.append(file.name)
            for file in sorted((self.sql_root / "views").glob("*.sql")):
                try:
                    con.execute(file.read_text())
                except Exception as exc:
                    raise WarehouseError(f"view file {file} failed: {exc}") from exc
            # Which sql/views the file holds, so the read-only path (which never migrates) can tell stale views.
            digest = self._views_digest()
            con.execute("CREATE TABLE IF NOT EXISTS schema_views ("
                        " digest VARCHAR NOT NULL, applied_at TIMESTAMP DEFAULT current_timestamp)")
            if con.execute("SELECT digest FROM schema_views").fetchall() != [(digest,)]:
                with in_transaction(con):
                    con.execute("DELETE FROM schema_views")
                    con.execute("INSERT INTO schema_views (digest) VALUES (?)", [digest])
        finally:
            con.close()
        self._migrated = True
        return applied_now

    def _views_digest(self) -> str:
        h = hashlib.sha256()
        for file in sorted((self.sql_root / "views").glob("*.sql")):
            h.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
        return h.hexdigest()

    def _check_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        """Raise WarehouseNotReady unless every sql/schema file is applied and sql/views is current."""
        try:
            done = {row[0] for row in con.execute("SELECT name FROM schema_version").fetchall()}
        except duckdb.CatalogException:
            raise WarehouseNotReady(f"the warehouse at {self.path} has no schema; {_RUN_A_WRITER}") from None
        missing = sorted(f.name for f in (self.sql_root / "schema").glob("*.sql") if f.name not in done)
        if missing:
            raise WarehouseNotReady(f"the warehouse at {self.path} is outdated (schema files not applied: "
                                    f"{', '.join(missing)}); {_RUN_A_WRITER}")
        try:
            stored = con.execute("SELECT digest FROM schema_views").fetchall()
        except duckdb.CatalogException:
            stored = []
        if stored != [(self._views_digest(),)]:
            raise WarehouseNotReady(f"the warehouse at {self.path} has outdated views (sql/views changed since it "
                                    f"was last migrated); {_RUN_A_WRITER}")

    def schema_version(self) -> list[str]:
        with self.connect(read_only=True) as con:
            return [r[0] for r in con.execute("SELECT name FROM schema_version ORDER BY name").fetchall()]

    # -- reads -------------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence | dict | None = None) -> pl.DataFrame:
        """Run a read-only statement (the library's reads; the schema is applied first if needed). Statements
        other than SELECT are refused before they reach the database (see check_read_only), and the connection
        itself is read-only as a second guard."""
        with self.connect(read_only=True) as con:
            check_read_only(sql, con)
            try:
                return relation_frame(con, sql, params)
            except duckdb.Error as exc:
                if "read-only" in str(exc).lower():
                    raise ReadOnlyViolation(f"refused: the statement writes ({exc})") from exc
                raise

    def query_read_only(self, sql: str, params: Sequence | dict | None = None, *,
                        timeout_s: float | None = None) -> pl.DataFrame:
        """Run user-supplied SQL on the strict read-only connection (connect_read_only): nothing is migrated or
        created and the warehouse file is never written; only SELECT (or EXPLAIN of a SELECT) is accepted. With
        several statements, the last one's result (see query_read_only_all for each)."""
        return self.query_read_only_all(sql, params, timeout_s=timeout_s)[-1][1]

    def query_read_only_all(self, sql: str, params: Sequence | dict | None = None, *,
                            timeout_s: float | None = None) -> list[tuple[str, pl.DataFrame]]:
        """Each statement of user-supplied SQL with its result, in order, on the strict read-only connection.
        Every statement is checked before any runs. `timeout_s`: the whole call is interrupted after that many
        seconds (QueryTimeout). `params` only with a single statement."""
        with self.connect_read_only() as con:
            statements = check_read_only(sql, con)
            if params and len(statements) > 1:
                raise WarehouseError("query parameters need a single statement")
            timer = None
            if timeout_s is not None:
                # DuckDB checks for an interrupt while it executes, so a long scan stops within moments.
                timer = threading.Timer(timeout_s, con.interrupt)
                timer.daemon = True
                timer.start()
            try:
                out = []
                for statement in statements:
                    out.append((statement, relation_frame(con, statement, params)))
                return out
            except duckdb.InterruptException:
                raise QueryTimeout(f"query stopped after {timeout_s:g}s (its timeout; raise it with "
                                   "`sql --timeout SECONDS`)") from None
            except (duckdb.PermissionException, duckdb.InvalidInputException) as exc:
                if "disabled" in str(exc) or "read-only" in str(exc) or "locked" in str(exc):
                    raise ReadOnlyViolation(f"refused: {exc}") from exc
                raise
            finally:
                if timer is not None:
                    timer.cancel()

    def list_queries(self) -> list[str]:
        return named_queries(self.sql_root)

    def query_text(self, name: str) -> str:
        return named_query_text(name, self.sql_root)

    def named_query(self, name: str, params: Sequence | dict | None = None) -> pl.DataFrame:
        return self.query(self.query_text(name), params)

    def count(self, table: str, where: str = "TRUE", params: Sequence | None = None) -> int:
        with self.connect(read_only=True) as con:
            return con.execute(f"SELECT count(*) FROM {table} WHERE {where}", params or []).fetchone()[0]

    # -- writes ------------------------------------------------------------------------------------
    def replace_rows(self, table: str, frame: pl.DataFrame, *, where: str | None = None,
                     params: Sequence | None = None) -> int:
        """Delete the rows matching `where` and insert `frame`, in one transaction (rematerialising a
        partition replaces exactly that partition). Columns are matched by name."""
        with self.transaction() as con:
            if where:
                con.execute(f"DELETE FROM {table} WHERE {where}", params or [])
            return insert_frame(con, table, frame)


@contextmanager
def _snapshot_dir(beside: Path) -> Iterator[str]:
    """A private temporary directory for a snapshot: beside the warehouse (same filesystem, room for its size),
    else the system's temporary directory when the home is not writable."""
    try:
        holder = tempfile.TemporaryDirectory(prefix=".sql-snapshot-", dir=beside)
    except OSError:
        holder = tempfile.TemporaryDirectory(prefix="alignment-sql-snapshot-")
    with holder as tmp:
        yield tmp


def _connect_strict(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=True, config=_READ_ONLY_CONFIG)
    try:
        # Library calls print nothing: no progress bar on long queries; then no SET/RESET from here on.
        con.execute("SET enable_progress_bar = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def in_transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on `con`: committed when the block ends, rolled back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def named_queries(sql_root: str | Path | None = None) -> list[str]:
    """The named queries in sql/queries/ (no warehouse needed)."""
    return sorted(p.stem for p in (Path(sql_root or sql_dir()) / "queries").glob("*.sql"))


def named_query_text(name: str, sql_root: str | Path | None = None) -> str:
    file = Path(sql_root or sql_dir()) / "queries" / f"{name}.sql"
    if not file.is_file():
        raise WarehouseError(f"no named query {name!r}; known: {', '.join(named_queries(sql_root))}")
    return file.read_text()


def relation_frame(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence | dict | None = None) -> pl.DataFrame:
    """Result of a query as a polars frame (through Arrow). A statement returning no rows gives an empty frame."""
    relation = con.sql(sql, params=params or None)
    if relation is None:
        return pl.DataFrame()
    return relation.pl()


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, *,
                 on_conflict: str = "") -> int:
    """Insert a polars frame by column name through Arrow (no per-row Python)."""
    if frame.height == 0:
        return 0
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    con.register("_incoming", frame.to_arrow())
    try:
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _incoming {on_conflict}")
    finally:
        con.unregister("_incoming")
    return frame.height


def check_read_only(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """Refuse anything but SELECT statements (SELECT, WITH … SELECT, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT,
    UNPIVOT) and EXPLAIN [ANALYZE] of one, as DuckDB's own parser classifies them, so string literals and comments
    cannot hide a statement. The read-only connection is a second guard; this gives a clear message and also
    catches statements DuckDB allows on read-only files (SET, ATTACH, COPY TO, CHECKPOINT, INSTALL/LOAD). A
    statement that does not parse raises DuckDB's ParserException. `con` only parses (an in-memory one is used
    when not given). Returns the statements' texts, in order."""
    parser = con if con is not None else duckdb.connect(":memory:")
    try:
        statements = parser.extract_statements(sql)
        if not statements:
            raise WarehouseError("empty statement")
        for statement in statements:
            kind = _statement_kind(parser, statement)
            if kind != "SELECT":
                raise ReadOnlyViolation(
                    f"refused: {kind} statement ({_snippet(statement.query)}); only read-only queries run here "
                    "(SELECT, or EXPLAIN of a SELECT)")
        return [statement.query.strip().rstrip(";").strip() for statement in statements]
    finally:
        if con is None:
            parser.close()


# A PIVOT whose columns come from the data parses as a MULTI statement (DuckDB first reads the distinct values),
# whatever surrounds it, so DuckDB's type does not say whether it writes. It counts as a SELECT when it starts as
# one and names none of the words that write or change state anywhere outside literals and comments.
_QUERY_STARTS = frozenset({"PIVOT", "PIVOT_WIDER", "UNPIVOT", "PIVOT_LONGER", "SELECT", "WITH", "FROM", "VALUES"})
_STATE_WORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "ATTACH", "DETACH", "SET", "RESET", "PRAGMA",
    "CALL", "INSTALL", "LOAD", "EXPORT", "IMPORT", "CHECKPOINT", "VACUUM", "TRUNCATE", "MERGE", "USE", "EXECUTE",
    "PREPARE", "DEALLOCATE", "BEGIN", "COMMIT", "ROLLBACK", "ABORT", "ANALYZE", "EXPLAIN", "TRANSACTION"})


def _multi_is_select(text: str) -> bool:
    raw = text.encode()
    every = duckdb.tokenize(text)
    ends = [pos for pos, _ in every[1:]] + [len(raw)]
    words = [(kind, raw[pos:end].decode().strip().upper()) for (pos, kind), end in zip(every, ends, strict=True)
             if kind != duckdb.token_type.comment]
    if not words:
        return False
    first_kind, first = words[0]
    if not (first in _QUERY_STARTS or (first_kind == duckdb.token_type.operator and first.startswith("("))):
        return False
    return not any(kind in (duckdb.token_type.keyword, duckdb.token_type.identifier) and word in _STATE_WORDS
                   for kind, word in words)


def _statement_kind(parser: duckdb.DuckDBPyConnection, statement) -> str:
    """SELECT for a SELECT or an EXPLAIN of one; otherwise the statement's type, e.g. COPY, SET, EXPLAIN COPY."""
    kind = statement.type.name
    if statement.type == duckdb.StatementType.MULTI:
        return "SELECT" if _multi_is_select(statement.query) else kind
    if statement.type != duckdb.StatementType.EXPLAIN:
        return kind
    inner = _explained(statement.query)
    if inner is None:
        return "EXPLAIN"
    try:
        explained = parser.extract_statements(inner)
    except duckdb.Error:
        return "EXPLAIN"
    if len(explained) != 1:
        return "EXPLAIN"
    inner_kind = explained[0].type.name
    return "SELECT" if inner_kind == "SELECT" else f"EXPLAIN {inner_kind}"


def _explained(text: str) -> str | None:
    """The statement inside `EXPLAIN [ANALYZE] [(options)] <statement>`, found with DuckDB's tokenizer (token
    positions are byte offsets); None when the text does not have that shape."""
    raw = text.encode()
    every = duckdb.tokenize(text)
    ends = [pos for pos, _ in every[1:]] + [len(raw)]
    kept = [(pos, kind, raw[pos:end].decode().strip().upper())
            for (pos, kind), end in zip(every, ends, strict=True) if kind != duckdb.token_type.comment]
    tokens, words = [(pos, kind) for pos, kind, _ in kept], [word for _, _, word in kept]
    if not words or words[0] != "EXPLAIN":
        return None
    i, depth = 1, 0
    while i < len(tokens):
        word, kind = words[i], tokens[i][1]
        if depth == 0 and kind == duckdb.token_type.keyword and word in ("ANALYZE", "ANALYSE"):
            i += 1
        elif kind == duckdb.token_type.operator and (word.startswith("(") or depth > 0):
            depth += word.count("(") - word.count(")")
            i += 1
        elif depth > 0:
            i += 1
        else:
            return raw[tokens[i][0]:].decode()
    return None


def _snippet(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split()).rstrip(";")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
