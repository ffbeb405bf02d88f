"""The `checkpoints` table: each trained stage or baseline with where it came from and where it lives."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import polars as pl

from alignment_pipeline.training.stages import CHECKPOINTS, checkpoint
from alignment_pipeline.warehouse.db import Warehouse, insert_frame


def record_checkpoint(warehouse: Warehouse, *, name: str, kind: str, objective: str, path: str,
                      base_model: str, parent_checkpoint: str | None, samples_batches: list[str], steps: int,
                      mlflow_run_id: str | None = None, registered_model: str | None = None,
                      metrics: dict | None = None, note: str | None = None) -> None:
    """Insert or replace the row of checkpoint `name` (retraining a stage replaces its row). `note`: why it was not
    trained (see not_trained_note); None for a trained checkpoint."""
    checkpoint(kind)  # an unknown kind is refused here, naming the known ones
    clean = {k: (v if not (isinstance(v, float) and not math.isfinite(v)) else None)
             for k, v in (metrics or {}).items()}
    frame = pl.DataFrame({
        "name": [name], "kind": [kind], "objective": [objective], "path": [str(path)],
        "base_model": [base_model], "parent_checkpoint": [parent_checkpoint],
        "samples_batches": [list(samples_batches)], "steps": [int(steps)], "mlflow_run_id": [mlflow_run_id],
        "registered_model": [registered_model], "metrics": [json.dumps(clean, default=str)],
        "created_at": [datetime.now(timezone.utc).replace(tzinfo=None)], "note": [note],
    }, schema_overrides={"samples_batches": pl.List(pl.String), "parent_checkpoint": pl.String,
                         "mlflow_run_id": pl.String, "registered_model": pl.String, "note": pl.String})
    kinds = pl.DataFrame([{"kind": c.kind, "role": c.role, "objective": c.objective, "parent": c.parent,
                           "description": c.description} for c in CHECKPOINTS],
                         schema_overrides={"parent": pl.String})
    with warehouse.transaction() as con:
        con.execute("DELETE FROM checkpoint_kinds")
        insert_frame(con, "checkpoint_kinds", kinds)
        con.execute("DELETE FROM checkpoints WHERE name = ?", [name])
        insert_frame(con, "checkpoints", frame)


def checkpoint_row(warehouse: Warehouse, name: str) -> dict | None:
    frame = warehouse.query("SELECT * FROM checkpoints WHERE name = ?", [name])
    return frame.to_dicts()[0] if frame.height else None


def not_trained_note(row: dict | None) -> str | None:
    """Why the checkpoint of `row` holds no training of its own: never recorded, or recorded untrained."""
    if row is None:
        return "no checkpoints row: its asset has not run"
    return row.get("note")
