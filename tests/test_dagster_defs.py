"""The orchestration layer: definitions load, the sensor, the prompt asset, one DuckDB writer at a time."""

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from alignment_pipeline.definitions import defs
from alignment_pipeline.defs.partitions import prompt_batches
from alignment_pipeline.defs.prompts import seed_prompts
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.defs.sensors import new_prompt_files
from alignment_pipeline.prompts.ingest import batch_key

ROOT = Path(__file__).resolve().parents[1]
WRITERS = Path(__file__).with_name("writers_job.py")


def test_definitions_validate_from_workspace():
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr


def test_lineage_graph_contains_seed_prompts_and_jobs():
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("seed_prompts") in graph.get_all_asset_keys()
    assert {j.name for j in defs.jobs} >= {"batch_lineage", "training", "benchmarks"}


def test_reward_model_feeds_the_rlhf_checkpoint_in_the_training_job():
    graph = defs.resolve_asset_graph()
    rm, rlhf = dg.AssetKey("reward_model"), dg.AssetKey(["checkpoints", "rlhf"])
    assert graph.get(rm).parent_keys == {dg.AssetKey("alignment_samples")}
    assert rm in graph.get(rlhf).parent_keys
    assert graph.get(rm).group_name == "training"
    training = defs.resolve_job_def("training")
    assert rm in training.asset_layer.selected_asset_keys and rlhf in training.asset_layer.selected_asset_keys


def test_sensor_new_file_gives_partition_and_run_then_nothing(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "first.jsonl").write_text('{"prompt": "Is it fair to read a partner\'s messages?"}\n')
    resource = PipelineResource(home=str(tmp_path / "home"), inbox=str(inbox))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"pipeline": resource})
        result = new_prompt_files(context)
        first = batch_key(inbox / "first.jsonl")
        assert [r.partition_key for r in result.run_requests] == [first]
        assert result.dynamic_partitions_requests[0].partition_keys == [first]

        instance.add_dynamic_partitions(prompt_batches.name, [first])
        again = new_prompt_files(dg.build_sensor_context(instance=instance, resources={"pipeline": resource}))
        assert not again.run_requests
        assert not again.dynamic_partitions_requests

        (inbox / "second.txt").write_text("How should I split a bill fairly?\n")
        third = new_prompt_files(dg.build_sensor_context(instance=instance, resources={"pipeline": resource}))
        assert [r.partition_key for r in third.run_requests] == [batch_key(inbox / "second.txt")]


def test_seed_prompts_asset_keeps_good_rows_and_reports_rejects(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "mixed.jsonl").write_text(
        '{"prompt": "Should I tell my friend the truth?", "category": "ethical_dilemma"}\n'
        "{not json\n"
        '{"prompt": "   "}\n'
        '{"prompt": "How do I bake bread?"}\n'
    )
    resource = PipelineResource(home=str(tmp_path / "home"), inbox=str(inbox))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(prompt_batches.name, ["mixed.jsonl"])
        result = dg.materialize([seed_prompts], partition_key="mixed.jsonl", instance=instance,
                                resources={"pipeline": resource})
        assert result.success
        checks = {c.check_name: (c.passed, c.severity) for c in result.get_asset_check_evaluations()}
        assert checks == {"no_empty_text": (True, dg.AssetCheckSeverity.ERROR),
                          "unique_hash": (True, dg.AssetCheckSeverity.ERROR),
                          "hash_matches_text": (True, dg.AssetCheckSeverity.ERROR),
                          "rejected_rows": (False, dg.AssetCheckSeverity.WARN)}  # 2 rows rejected: a warning
    warehouse = resource.warehouse()
    assert warehouse.count("prompts") == 2
    rejected = warehouse.query("SELECT line, reason FROM rejected_prompts ORDER BY line")
    assert rejected["line"].to_list() == [2, 3]


def test_seed_prompts_fails_naming_an_unreadable_file(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.csv").write_text("question\nno prompt column here\n")
    resource = PipelineResource(home=str(tmp_path / "home"), inbox=str(inbox))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(prompt_batches.name, ["bad.csv"])
        result = dg.materialize([seed_prompts], partition_key="bad.csv", instance=instance,
                                resources={"pipeline": resource}, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("seed_prompts")
    assert "bad.csv" in str(failure.error)


# -- two DuckDB-writing steps in one multiprocess run ----------------------------------------------------------
# The jobs live in a file of their own so the executor's step processes can load them by path.

@pytest.mark.parametrize("limited", [True, False])
def test_duckdb_writers_serialised_under_multiprocess_executor(home, tmp_path, limited):
    from alignment_pipeline.warehouse import Warehouse

    Warehouse(Path(home) / "warehouse.duckdb").migrate()  # both steps start from an existing file
    from dagster._core.definitions.reconstruct import ReconstructableJob

    recon = ReconstructableJob.for_file(str(WRITERS), "limited_job" if limited else "unlimited_job")
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.execute_job(recon, instance=instance, raise_on_error=False)
        events = [e for e in result.all_events if e.is_step_failure]
        if limited:
            assert result.success, [(e.event_type_value, e.message) for e in result.all_events if "FAIL" in e.event_type_value or "ERROR" in e.event_type_value]
            assert Warehouse(Path(home) / "warehouse.duckdb").count("writes") == 2
        else:
            # Without the tag limit the two steps overlap and one fails on DuckDB's file lock.
            assert not result.success
            assert any("lock" in str(e.event_specific_data.error).lower() for e in events)
    shutil.rmtree(tmp_path / "dagster", ignore_errors=True)
