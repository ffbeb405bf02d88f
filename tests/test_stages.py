"""The list of what gets trained is the one source: assets, partitions, SQL and the launcher follow it."""

import pytest

from alignment_pipeline.training.lineage import record_checkpoint
from alignment_pipeline.training.stages import CHECKPOINT_KINDS, CHECKPOINTS, MODELS, checkpoint
from alignment_pipeline.warehouse import Warehouse


def _record(wh, kind):
    record_checkpoint(wh, name=kind, kind=kind, objective=checkpoint(kind).objective, path="/m", base_model="b",
                      parent_checkpoint=None, samples_batches=["b1"], steps=1)


def test_parents_come_earlier_and_models_start_with_the_base():
    seen = set()
    for entry in CHECKPOINTS:
        assert entry.parent is None or entry.parent in seen, entry.kind
        assert entry.description and entry.role in ("stage", "baseline", "control")
        seen.add(entry.kind)
    assert MODELS == ("base", *CHECKPOINT_KINDS)
    with pytest.raises(ValueError, match="unknown checkpoint kind 'nope'"):
        checkpoint("nope")


def test_the_warehouse_holds_the_list_and_refuses_other_kinds(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    _record(wh, "dpo")
    kinds = wh.query("SELECT kind, role, objective, parent, description FROM checkpoint_kinds ORDER BY kind")
    assert kinds.to_dicts() == sorted(
        ({"kind": c.kind, "role": c.role, "objective": c.objective, "parent": c.parent,
          "description": c.description} for c in CHECKPOINTS), key=lambda r: r["kind"])
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        _record(wh, "ppo_from_nowhere")
    assert wh.query("SELECT name FROM checkpoints")["name"].to_list() == ["dpo"]
    _record(wh, "dpo")  # retraining replaces the row
    assert wh.count("checkpoints") == 1


def test_dagster_assets_partitions_and_launcher_follow_the_list():
    from alignment_pipeline.defs.partitions import checkpoint_partitions
    from alignment_pipeline.defs.training import checkpoint_assets
    from alignment_pipeline.training.launch import _parse

    assert checkpoint_partitions.get_partition_keys() == list(MODELS)
    by_kind = {a.key.path[-1]: a for a in checkpoint_assets}
    assert list(by_kind) == list(CHECKPOINT_KINDS)
    for entry in CHECKPOINTS:
        deps = {k.to_user_string() for k in by_kind[entry.kind].dependency_keys}
        rlhf = {"reward_model"} if entry.online else set()
        assert deps == {"alignment_samples"} | rlhf | ({f"checkpoints/{entry.parent}"} if entry.parent else set())
    assert _parse(["--kind", "sppo"]).kind == "sppo"
    with pytest.raises(SystemExit):
        _parse(["--kind", "nope"])


def test_migration_keeps_existing_checkpoints(tmp_path):
    """A warehouse made before checkpoint_kinds existed keeps its rows through the migration."""
    import shutil

    from alignment_pipeline.paths import sql_dir

    old_sql = tmp_path / "sql"
    shutil.copytree(sql_dir(), old_sql)
    for later in ("041_checkpoint_kinds.sql", "043_not_trained.sql"):
        (old_sql / "schema" / later).unlink()
    path = tmp_path / "w.duckdb"
    with Warehouse(path, sql_root=old_sql).transaction() as con:
        con.execute("INSERT INTO checkpoints VALUES ('sft', 'sft', 'sft', '/m', 'b', NULL, ['x'], 3, NULL, NULL, "
                    "'{}', now())")
    wh = Warehouse(path)
    assert {"041_checkpoint_kinds.sql", "043_not_trained.sql"} <= set(wh.migrate())
    assert wh.query("SELECT name, steps, note FROM checkpoints").to_dicts() == [{"name": "sft", "steps": 3, "note": None}]
