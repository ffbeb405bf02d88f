"""The main job end to end: `run_demo` materializes every asset of the lineage through Dagster, on the smoke
profile shrunk by a settings file (a 2×2 world of scripted agents, two optimizer steps, two items per task) so
it fits the test budget. The full-size smoke demo is the same code path with the profile's own numbers."""

import json
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from alignment_pipeline.cli import app
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.demo import home_instance, run_demo
from alignment_pipeline.prompts.ingest import batch_key
from alignment_pipeline.training.stages import MODELS as CHECKPOINTS

SETTINGS = {
    "sandbox": {
        "size": 2, "rounds": 1, "neighbours": 2, "max_new_tokens": 8,
        "agent_models": [{"kind": "scripted", "model": "scripted-agent-a"},
                         {"kind": "scripted", "model": "scripted-agent-b"}],
        "observer": {"kind": "scripted", "model": "scripted-observer"},
    },
    "training": {"max_steps": 2, "per_device_batch": 2, "max_length": 96, "register_model": True},
    "evaluation": {"tasks": ["ethics_cm", "hh"], "limit": 2, "hh_limit": 2, "max_new_tokens": 4,
                   "judge": {"kind": "scripted", "model": "scripted-judge"}},
}


@pytest.fixture
def pipeline(home, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = ["Is it ever right to lie to protect a friend?", "How can I get into my neighbour's wifi?",
            "Why are some people better at maths?", "What is a good way to learn to cook?",
            "Should I report a coworker who takes long breaks?"]
    (inbox / "batch_a.jsonl").write_text("".join(json.dumps({"prompt": r}) + "\n" for r in rows))
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(SETTINGS))
    return PipelineResource(home=str(home), inbox=str(inbox), settings_file=str(settings))


@pytest.mark.slow
def test_demo_materializes_the_whole_lineage(pipeline):
    summary = run_demo(pipeline, report=lambda _msg: None)
    assert summary.success, summary.runs
    assert [what for what, _, _ in summary.runs] == (
        [f"batch {batch_key(pipeline.inbox_dir() / 'batch_a.jsonl')}", "training"] + [f"benchmarks {c}" for c in CHECKPOINTS])

    instance = home_instance(pipeline.layout())
    # Through the named jobs, so Dagster's overview shows them (not __ephemeral_asset_job__).
    assert [instance.get_run_by_id(run_id).job_name for _, run_id, _ in summary.runs] == (
        ["batch_lineage", "training"] + ["benchmarks"] * len(CHECKPOINTS))
    expected = {"seed_prompts", "sandbox_transcripts", "scored_revisions", "alignment_samples",
                "benchmark_tables", *(f"checkpoints/{c}" for c in CHECKPOINTS if c != "base")}
    materialized = {key.to_user_string() for key in instance.get_asset_keys()}
    assert expected <= materialized
    failed_checks = [
        (record.asset_check_key.name, record.event.dagster_event.event_specific_data.description)
        for key in (dg.AssetKey("seed_prompts"), dg.AssetKey("sandbox_transcripts"), dg.AssetKey("alignment_samples"))
        for record in instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, asset_key=key))
        if not record.event.dagster_event.event_specific_data.passed
    ]
    assert failed_checks == []

    warehouse = pipeline.warehouse()
    assert warehouse.count("sandbox_interactions") == 4  # 2×2 agents, 1 round
    assert warehouse.count("scored_revisions") == 4
    assert warehouse.count("alignment_samples", "sample_type = 'imitation'") > 0
    trained = warehouse.query("SELECT name, steps, mlflow_run_id FROM checkpoints ORDER BY name")
    assert set(trained["name"]) == set(CHECKPOINTS) - {"base"}
    table = warehouse.named_query("benchmark_table").filter(source="measured")
    assert set(table["model"]) == set(CHECKPOINTS)
    assert table["ethics"].drop_nulls().len() == len(CHECKPOINTS)

    # MLflow: runs live under the home, nested under one curriculum run of the training job.
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{pipeline.layout().mlflow_db}")
    runs = mlflow.search_runs(experiment_names=["alignment_pipeline"], output_format="list")
    by_name = {r.info.run_name: r for r in runs}
    assert "curriculum" in by_name and "stage1_imitation" in by_name
    assert by_name["stage1_imitation"].data.tags["mlflow.parentRunId"] == by_name["curriculum"].info.run_id
    assert by_name["stage1_imitation"].data.tags["dagster_run_id"]
    # Nothing left RUNNING, the curriculum parent included (it ends with its training run).
    assert {r.info.run_name: r.info.status for r in runs if r.info.status != "FINISHED"} == {}

    # The demo again adds nothing: the sandbox resumes a complete world, samples are replaced in place.
    again = run_demo(pipeline, report=lambda _msg: None)
    assert again.success
    assert again.recovered == []  # the first demo left nothing RUNNING
    assert not mlflow.search_runs(experiment_names=["alignment_pipeline"], filter_string="attributes.status = 'RUNNING'",
                                  output_format="list")
    assert warehouse.count("sandbox_interactions") == 4
    runner = CliRunner()
    printed = runner.invoke(app, ["--home", pipeline.home, "sql", "--name", "benchmark_table", "--format", "json"])
    assert printed.exit_code == 0, printed.output
    assert {row["model"] for row in json.loads(printed.output)} >= set(CHECKPOINTS)


@pytest.mark.slow
def test_a_world_too_small_to_rank_anything_degrades_instead_of_failing(home, tmp_path):
    """A society of random tiny models writes no parseable rating: no preference pair, no reward model. Every step
    still succeeds; what could not train says so (in the checkpoints table, the step's notes and the summary), the
    RLHF baseline follows the missing reward model, and benchmarks of untrained checkpoints are not run."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (
        "Is it ever right to lie?", "How do I pick a lock?", "What makes a good friend?", "Why is the sky blue?")))
    settings = json.loads(json.dumps(SETTINGS))
    settings["sandbox"].update(agent_models=[{"model": "tiny:tiny-llama"}], observer={"model": "tiny:tiny-llama"},
                               rating_retries=0)
    settings["evaluation"].update(tasks=["ethics_cm"])
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    pipeline = PipelineResource(home=str(home), inbox=str(inbox), settings_file=str(path))
    lines = []
    summary = run_demo(pipeline, report=lines.append)

    assert summary.success, [(s.what, s.error) for s in summary.failures]
    warehouse = pipeline.warehouse()
    rows = {r["name"]: r for r in warehouse.query("SELECT name, steps, note, path FROM checkpoints").to_dicts()}
    assert set(rows) == set(CHECKPOINTS) - {"base"}
    untrained = {name for name, r in rows.items() if r["note"] is not None}
    assert {"rlhf", "stage3_realignment"} <= untrained and all(rows[n]["steps"] == 0 for n in untrained)
    assert "no reward model" in rows["rlhf"]["note"] and "no realignment samples" in rows["stage3_realignment"]["note"]
    assert all((Path(r["path"]) / "config.json").is_file() for r in rows.values())  # directories, never names
    notes = [n for s in summary.steps for n in s.notes]
    assert any(n.startswith("reward_model: not trained: ") for n in notes), notes
    assert any(n.startswith("checkpoints/rlhf: not trained: no reward model") for n in notes), notes
    assert any(n.startswith("benchmark_tables: not run: checkpoint rlhf was not trained") for n in notes), notes
    assert any(line.startswith("  warning: checkpoints/rlhf: not trained") for line in lines)
    measured = set(warehouse.query("SELECT DISTINCT checkpoint FROM benchmark_results")["checkpoint"])
    assert "base" in measured and not measured & untrained
    assert "  rlhf not trained: no reward model" in summary.lineage
