"""The main job end to end: what the README's smoke demo materializes through Dagster (every asset of the lineage,
checks, MLflow runs), and a world too small to rank anything degrading instead of failing. SETTINGS shrink the
smoke profile (a 2×2 world of scripted agents, two optimizer steps, two items per task) for the tests that run a
demo of their own."""

import json
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from alignment_pipeline.cli import app
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.demo import home_instance, run_demo
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


@pytest.mark.slow
def test_demo_materializes_the_whole_lineage(smoke_demo):
    """What the README's smoke demo (run once per session by the `smoke_demo` fixture) left in its home."""
    home, env, done, _seconds = smoke_demo
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    pipeline = PipelineResource(home=str(home), profile="smoke")
    instance = home_instance(pipeline.layout())
    runs = instance.get_runs()
    # Through the named jobs, so Dagster's overview shows them (not __ephemeral_asset_job__).
    assert sorted(r.job_name for r in runs) == sorted(["batch_lineage", "training"] + ["benchmarks"] * len(CHECKPOINTS))
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    expected = {"seed_prompts", "sandbox_transcripts", "scored_revisions", "alignment_samples", "reward_model",
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
    interactions = warehouse.count("sandbox_interactions")
    assert interactions == 18  # the smoke world: 3×3 agents, 2 rounds
    assert warehouse.count("scored_revisions") == interactions
    assert all(warehouse.count("alignment_samples", f"sample_type = '{t}'") > 0
               for t in ("imitation", "self_critique", "realignment"))
    trained = warehouse.query("SELECT name, steps, mlflow_run_id FROM checkpoints ORDER BY name")
    assert set(trained["name"]) == set(CHECKPOINTS) - {"base"} and trained["mlflow_run_id"].null_count() == 0
    measured = set(warehouse.query("SELECT DISTINCT checkpoint FROM benchmark_results")["checkpoint"])
    assert measured == set(CHECKPOINTS)

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

    # The batch again adds nothing: the sandbox resumes a complete world, samples are replaced in place.
    from alignment_pipeline.definitions import build_definitions
    from alignment_pipeline.defs.jobs import batch_lineage_job

    batch = next(r.tags["dagster/partition"] for r in instance.get_runs() if r.job_name == "batch_lineage")
    samples = warehouse.count("alignment_samples")
    again = build_definitions().resolve_job_def(batch_lineage_job.name).execute_in_process(
        instance=instance, partition_key=batch, resources={"pipeline": pipeline}, raise_on_error=False)
    assert again.success
    assert (warehouse.count("sandbox_interactions"), warehouse.count("alignment_samples")) == (interactions, samples)
    printed = CliRunner().invoke(app, ["--home", str(home), "sql", "--name", "benchmark_table", "--format", "json"])
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
