from alignment_pipeline.warehouse.db import (
    QueryTimeout,
    ReadOnlyViolation,
    Warehouse,
    WarehouseError,
    WarehouseNotReady,
    check_read_only,
    insert_frame,
    named_queries,
    named_query_text,
    relation_frame,
)

__all__ = ["Warehouse", "WarehouseError", "ReadOnlyViolation", "WarehouseNotReady", "QueryTimeout", "check_read_only",
           "insert_frame", "named_queries", "named_query_text", "relation_frame"]
