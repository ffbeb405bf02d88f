"""The demo runner's failure path: a failed step is reported and the CLI exits 1 (never hangs), runs go through
the named jobs, a killed demo's runs are ended on the next start, `--home` works after the subcommand."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
from test_demo_lineage import SETTINGS
from typer.testing import CliRunner

from alignment_pipeline import demo as demo_module
from alignment_pipeline.cli import app
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.demo import (
    DemoSummary,
    fail_orphaned_runs,
    home_instance,
    recover_stale_runs,
    run_demo,
)
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.prompts.readers import PromptFileError
from alignment_pipeline.training.stages import MODELS as CHECKPOINTS

PROMPTS = ["Is it ever right to lie to protect a friend?", "How can I get into my neighbour's wifi?",
           "What is a good way to learn to cook?"]


def _inbox(tmp_path: Path, *names: str) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in names:
        (inbox / name).write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return inbox


def _settings(tmp_path: Path, **training) -> Path:
    settings = json.loads(json.dumps(SETTINGS))
    settings["training"].update(training)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    return path


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNMENT_")}
    return {**env, "PYTHONPATH": str(Path(__file__).parent), **extra}


def _mlflow_runs(layout: HomeLayout) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{layout.mlflow_db}")
    experiment = client.get_experiment_by_name("alignment_pipeline")
    return list(client.search_runs([experiment.experiment_id])) if experiment else []


# A demo killed mid-stage: a Dagster run STARTED in the home's instance, an MLflow stage run and its curriculum
# parent RUNNING, then SIGKILL. Prints the Dagster run id first.
KILLED = textwrap.dedent("""
    import os, signal, sys
    import dagster as dg
    from alignment_pipeline import tracking
    from alignment_pipeline.demo import home_instance
    from alignment_pipeline.paths import HomeLayout

    layout = HomeLayout(sys.argv[1])

    @dg.op
    def train_and_die(context):
        tags = tracking.run_tags(dagster_run_id=context.run_id)
        parent = tracking.parent_run(layout, "curriculum", tags=tags)
        with tracking.start_run(layout, "stage1_imitation", tags=tags, parent_run_id=parent):
            print(context.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    @dg.job
    def killed_job():
        train_and_die()

    killed_job.execute_in_process(instance=home_instance(layout))
""")


def _killed_demo(home: Path) -> str:
    out = subprocess.run([sys.executable, "-c", KILLED, str(home)], capture_output=True, text=True, timeout=120,
                         env=_env())
    assert out.returncode == -9, out.stderr[-2000:]
    return out.stdout.split()[0]


def test_a_cyclic_exception_chain_does_not_hang_the_cli(tmp_path):
    """Dagster re-raises a step's error with a cause/context chain that loops; rich's traceback walked it
    forever. The CLI prints a plain traceback and exits."""
    script = textwrap.dedent("""
        from alignment_pipeline.cli import app

        @app.command("boom")
        def boom():
            inner, outer = ValueError("inner error"), RuntimeError("outer error")
            try:
                try:
                    raise inner
                except ValueError as exc:
                    raise outer from exc
            except RuntimeError:
                pass
            inner.__cause__ = outer  # inner -> outer -> inner
            raise inner

        app()
    """)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script, "boom"], capture_output=True, text=True, timeout=60,
                         env=_env())
    assert out.returncode == 1
    assert "ValueError: inner error" in out.stderr
    assert time.monotonic() - started < 60


def test_home_option_after_the_subcommand(home, tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNMENT_SETTINGS", raising=False)
    monkeypatch.setenv("ALIGNMENT_PROFILE", "smoke")
    runner = CliRunner()
    missing = tmp_path / "no-such-home"
    printed = runner.invoke(app, ["sql", "--home", str(missing), "SELECT 1"])
    assert printed.exit_code == 1, printed.output
    assert str(missing) in printed.output and not missing.exists()

    other = tmp_path / "other-home"
    monkeypatch.setenv("ALIGNMENT_INBOX", str(_inbox(tmp_path)))  # empty: the demo stops before any run
    printed = runner.invoke(app, ["demo", "--home", str(other), "--profile", "smoke"])
    assert printed.exit_code == 2, printed.output
    assert f"home {other}" in " ".join(printed.output.split()) and "no prompt files" in printed.output
    assert os.environ["ALIGNMENT_HOME"] == str(other)


def test_a_failed_batch_stops_training_and_nothing_raises(home, tmp_path, monkeypatch):
    """A step's failure is collected (step, user error), not raised; a failed batch skips training and the
    benchmarks; runs go through the named job batch_lineage."""
    import alignment_pipeline.defs.prompts as prompts_defs

    real = prompts_defs.ingest_file

    def ingest_file(warehouse, path, **kwargs):
        if Path(path).name.startswith("bad"):
            raise PromptFileError(path, "unreadable on purpose")
        return real(warehouse, path, **kwargs)

    monkeypatch.setattr(prompts_defs, "ingest_file", ingest_file)
    inbox = _inbox(tmp_path, "good.jsonl", "bad.jsonl")
    pipeline = PipelineResource(home=str(home), inbox=str(inbox), settings_file=str(_settings(tmp_path)))
    lines = []
    summary = run_demo(pipeline, report=lines.append)

    assert not summary.success
    by_what = {s.what: s for s in summary.steps}
    good, bad = (next(s for s in summary.steps if s.what.startswith(f"batch {n}")) for n in ("good", "bad"))
    assert good.status == "ok" and bad.status == "failed"
    assert "seed_prompts" in bad.error and "unreadable on purpose" in bad.error
    assert by_what["training"].status == "skipped"
    assert all(by_what[f"benchmarks {c}"].status == "skipped" for c in CHECKPOINTS)
    assert [what for what, _, _ in summary.runs] == [f"batch {b}" for b in summary.batches]

    instance = home_instance(pipeline.layout())
    assert {instance.get_run_by_id(s.run_id).job_name for s in (good, bad)} == {"batch_lineage"}
    assert instance.get_run_by_id(bad.run_id).status == dg.DagsterRunStatus.FAILURE
    # one line as each step starts, one as it ends, with its seconds
    assert any(line.startswith(f"start {bad.what} (job batch_lineage)") for line in lines)
    assert any(line.startswith(f"FAILED {bad.what} in ") and "unreadable on purpose" in line for line in lines)


def test_a_killed_demo_is_ended_on_restart(home, tmp_path):
    layout = HomeLayout(home)
    dagster_run_id = _killed_demo(home)
    instance = home_instance(layout)
    assert instance.get_run_by_id(dagster_run_id).status == dg.DagsterRunStatus.STARTED
    assert {r.info.run_name: r.info.status for r in _mlflow_runs(layout)} == {
        "curriculum": "RUNNING", "stage1_imitation": "RUNNING"}

    notes = recover_stale_runs(instance, layout)
    assert len(notes) == 3 and dagster_run_id in notes[0]
    assert instance.get_run_by_id(dagster_run_id).status == dg.DagsterRunStatus.FAILURE
    runs = _mlflow_runs(layout)
    assert {r.info.run_name: r.info.status for r in runs} == {"curriculum": "KILLED", "stage1_imitation": "KILLED"}
    assert all(dagster_run_id in r.data.tags["alignment/ended_by"] for r in runs)
    assert recover_stale_runs(instance, layout) == []


def test_a_live_run_is_left_alone(home):
    """A STARTED run whose process is alive (here: this one) is not marked failed."""
    instance = home_instance(HomeLayout(home))
    seen = {}

    @dg.op
    def look(context):
        seen["notes"] = fail_orphaned_runs(context.instance)
        seen["status"] = context.instance.get_run_by_id(context.run_id).status

    @dg.job
    def live_job():
        look()

    assert live_job.execute_in_process(instance=instance).success
    assert seen == {"notes": {}, "status": dg.DagsterRunStatus.STARTED}


def test_lineage_summary_text_and_its_error_are_kept(home, monkeypatch):
    import alignment_pipeline.summary as summary_module

    pipeline = PipelineResource(home=str(home))
    monkeypatch.setattr(summary_module, "lineage_summary", lambda warehouse: "lineage text", raising=False)
    summary = DemoSummary()
    demo_module._lineage_text(pipeline, summary)
    assert (summary.lineage, summary.lineage_error) == ("lineage text", None)

    def broken(warehouse):
        raise KeyError("no such table")

    monkeypatch.setattr(summary_module, "lineage_summary", broken, raising=False)
    summary = DemoSummary()
    demo_module._lineage_text(pipeline, summary)
    assert summary.lineage is None and "KeyError" in summary.lineage_error and "no such table" in summary.lineage_error


@pytest.mark.slow
def test_the_cli_demo_exits_1_naming_the_failed_step(tmp_path):
    """`demo` with a training step that fails at run time (no device cuda:99): exit 1 within the timeout (it used to spin forever), the summary
    names the step and the error, only named jobs ran, and nothing is left RUNNING (a killed demo's runs
    before it included)."""
    home = tmp_path / "home"
    killed = _killed_demo(home)
    env = _env(ALIGNMENT_INBOX=str(_inbox(tmp_path, "batch_a.jsonl")), DAGSTER_DISABLE_TELEMETRY="1")
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "alignment_pipeline.cli", "demo", "--home", str(home), "--profile", "smoke",
         "--settings", str(_settings(tmp_path, device="cuda:99"))],
        capture_output=True, text=True, timeout=420, env=env)
    seconds = time.monotonic() - started
    printed = out.stdout + out.stderr
    assert out.returncode == 1, printed[-4000:]
    lines = [" ".join(line.split()) for line in out.stdout.splitlines()]
    failed = [line for line in lines if line.startswith("failed training (job training, run ")]
    assert failed and "ValueError: device cuda:99" in failed[0], printed[-4000:]
    assert any(line.startswith("• done batch batch_a") for line in lines)
    assert any(line.startswith("• done benchmarks base") for line in lines)
    assert any(line.startswith("• skipped benchmarks stage1_imitation") for line in lines)
    assert not any(line.startswith("• start ") for line in lines)  # one line per step: its end
    assert any(line.startswith("• FAILED training in ") for line in lines)
    log = next(line for line in lines if line.startswith("failed: training")).split("full log: ")[1]
    assert " - DEBUG - " not in printed and " - INFO - " not in printed  # the runs' log lines: in the log file
    assert " - INFO - " in Path(log).read_text() and Path(log).parent == home / "logs"
    assert "lineage summary failed" not in printed
    hint = next(line for line in lines if "dagster dev" in line)
    assert f"ALIGNMENT_HOME={home}" in hint and "ALIGNMENT_PROFILE=smoke" in hint
    assert f"DAGSTER_HOME={home / 'dagster'}" in hint
    assert any(killed in line and "marked failed" in line for line in lines)
    print(f"demo failed after {seconds:.0f}s")

    layout = HomeLayout(home)
    instance = home_instance(layout)
    runs = instance.get_runs()
    assert {r.job_name for r in runs} == {"killed_job", "batch_lineage", "training", "benchmarks"}
    assert not [r.run_id for r in runs if r.status == dg.DagsterRunStatus.STARTED]
    assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
    statuses = {(r.info.run_name, r.data.tags.get("dagster_run_id")): r.info.status for r in _mlflow_runs(layout)}
    assert "RUNNING" not in statuses.values(), statuses
    assert statuses[("stage1_imitation", killed)] == "KILLED"


def test_a_second_demo_on_a_busy_home_stops_before_any_run(home):
    from filelock import FileLock

    pipeline = PipelineResource(home=str(home))
    with FileLock(str(pipeline.layout().root / ".demo.lock")):
        with pytest.raises(demo_module.HomeBusy, match="another demo is running"):
            run_demo(pipeline, report=lambda _msg: None)
    assert not list(home_instance(pipeline.layout()).get_runs())
