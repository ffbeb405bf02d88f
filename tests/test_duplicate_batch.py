"""An inbox holding a file and its byte-identical copy: the copy's batch owns no new prompts, so it has no
samples of its own, and every check of both batches stays green (the copy's sample checks are not applicable
rather than failed)."""

from __future__ import annotations

import json

import dagster as dg
from test_demo_lineage import SETTINGS as LINEAGE_SETTINGS

from alignment_pipeline.defs.partitions import prompt_batches
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.demo import home_instance
from alignment_pipeline.prompts.ingest import batch_key
from alignment_pipeline.samples.checks import check_type_shares

SETTINGS = {"sandbox": LINEAGE_SETTINGS["sandbox"]}  # the scripted 2×2 world; only the batch job runs


def test_a_file_and_its_copy_leave_every_check_green(home, tmp_path):
    from alignment_pipeline.definitions import build_definitions

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = ["Is it ever right to lie to protect a friend?", "What is a good way to learn to cook?"]
    text = "".join(json.dumps({"prompt": r}) + "\n" for r in rows)
    (inbox / "first.jsonl").write_text(text)
    (inbox / "second.jsonl").write_text(text)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(SETTINGS))
    pipeline = PipelineResource(home=str(home), inbox=str(inbox), settings_file=str(settings), profile="smoke")
    instance = home_instance(pipeline.layout())
    batches = [batch_key(inbox / "first.jsonl"), batch_key(inbox / "second.jsonl")]
    instance.add_dynamic_partitions(prompt_batches.name, batches)
    job = build_definitions().resolve_job_def("batch_lineage")

    for batch in batches:
        result = job.execute_in_process(instance=instance, partition_key=batch, resources={"pipeline": pipeline},
                                        raise_on_error=False)
        assert result.success, batch
        evaluations = [e.event_specific_data for e in result.all_events
                       if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]
        assert evaluations, "the batch's checks ran"
        failed = [(e.check_name, e.severity.value) for e in evaluations if not e.passed]
        assert failed == [], (batch, failed)

    warehouse = pipeline.warehouse()
    copy = batches[1]
    assert warehouse.count("alignment_samples", "batch = ?", [copy]) == 0
    assert warehouse.count("alignment_samples", "batch = ?", [batches[0]]) > 0
    outcome = check_type_shares(warehouse, copy)
    assert outcome.passed and outcome.metadata["applicable"] is False and "no new prompts" in outcome.description


def test_a_batch_with_new_prompts_but_no_samples_still_fails(home, tmp_path):
    from alignment_pipeline.prompts.ingest import ingest_file
    from alignment_pipeline.warehouse.db import Warehouse

    source = tmp_path / "fresh.txt"
    source.write_text("A question nobody asked before?\n")
    warehouse = Warehouse(tmp_path / "w.duckdb")
    report = ingest_file(warehouse, source)
    outcome = check_type_shares(warehouse, report.batch)
    assert not outcome.passed and outcome.severity == "ERROR"
