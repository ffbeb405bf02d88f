"""A checkpoint that was not trained is not benchmarked: it is its starting model, whose rows already exist, and
rows measured for it earlier (on other samples) would no longer describe it."""

from __future__ import annotations

from alignment_pipeline.warehouse.db import Warehouse


def forget_results(warehouse: Warehouse, checkpoint: str) -> int:
    """Delete `checkpoint`'s rows from every benchmark table (base tables named benchmark_* with a `checkpoint`
    column). Returns the rows deleted."""
    tables = warehouse.query(
        "SELECT t.table_name FROM information_schema.tables t JOIN information_schema.columns c "
        "ON c.table_name = t.table_name AND c.table_schema = t.table_schema "
        "WHERE t.table_type = 'BASE TABLE' AND t.table_name LIKE 'benchmark\\_%' ESCAPE '\\' "
        "AND c.column_name = 'checkpoint' ORDER BY 1")["table_name"].to_list()
    deleted = 0
    with warehouse.transaction() as con:
        for table in tables:
            deleted += con.execute(f'SELECT count(*) FROM "{table}" WHERE checkpoint = ?', [checkpoint]).fetchone()[0]
            con.execute(f'DELETE FROM "{table}" WHERE checkpoint = ?', [checkpoint])
    return deleted
