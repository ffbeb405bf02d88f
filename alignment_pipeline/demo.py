"""Materialize the whole lineage in-process through the named jobs (defs/jobs.py): every inbox batch
(`batch_lineage`), then `training`, then `benchmarks` of each checkpoint, one Dagster run per step in the
home's instance. Each run is recorded as one of the workspace's code location (the one `dagster dev -w
workspace.yaml` serves), so the UI lists it on Overview and its job's page and re-executes it like its own.

A failed step never raises out of `run_demo`: it is recorded with the user code's error, and the demo goes on
only where that makes sense (a failed batch stops training and benchmarks; a failed training run still
benchmarks the base model and the checkpoints it did train). On start, runs a killed demo left behind are
ended: Dagster runs STARTED whose process is gone are marked failed, and MLflow runs still RUNNING for a
Dagster run that has finished are marked FINISHED / FAILED / KILLED to match; after each step the same
ends the `curriculum` parent run of a training run (its steps share it, and none of them ends it)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from alignment_pipeline.defs.jobs import batch_lineage_job, benchmark_job, training_job
from alignment_pipeline.defs.partitions import prompt_batches
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.prompts.ingest import batch_key, list_inbox
from alignment_pipeline.stopping import DemoStopped, Stopper, pid_alive, stop_on_signals, terminate_tree
from alignment_pipeline.training.stages import MODELS

DEMO_TAGS = {"alignment/entry": "demo"}
ENDED_BY = "alignment-pipeline demo"
# Dagster's wrappers around the exception user code raised; the error shown is the one inside.
_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError", "DagsterResourceFunctionError"}
# Libraries whose info lines, warnings and progress bars would bury the demo's own lines (errors still show).
_QUIET_LOGGERS = {"transformers": logging.ERROR, "lm_eval": logging.ERROR, "lm-eval": logging.ERROR,
                  "datasets": logging.ERROR, "huggingface_hub": logging.ERROR, "accelerate": logging.ERROR,
                  "peft": logging.ERROR, "mlflow": logging.WARNING, "alembic": logging.WARNING,
                  "urllib3": logging.WARNING, "filelock": logging.WARNING, "fsspec": logging.WARNING}


def home_instance(layout: HomeLayout) -> dg.DagsterInstance:
    """The persistent Dagster instance under the home, so `dagster dev` with DAGSTER_HOME=<home>/dagster shows
    the runs the CLI made."""
    root = layout.dagster_home
    config = root / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(root))


@dataclass
class StepOutcome:
    what: str  # "batch <key>", "training", "benchmarks <checkpoint>"
    job: str  # the named job it ran (or would have run)
    status: str  # ok | failed | skipped | canceled (a stop signal interrupted it)
    run_id: str = ""
    seconds: float = 0.0
    error: str = ""  # failed: the user code's error (per failed Dagster step); skipped: why
    notes: list[str] = field(default_factory=list)  # assets that ran without the data to train or evaluate

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class DemoSummary:
    batches: list[str] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # runs a killed demo left behind, ended on start
    ended: list[str] = field(default_factory=list)  # MLflow runs ended after their Dagster run (curriculum parents)
    lineage: str | None = None  # alignment_pipeline.summary.lineage_summary's text
    lineage_error: str | None = None  # why that text could not be made
    stopped_by: int | None = None  # the signal (SIGTERM, SIGINT) that stopped the demo, if one did
    not_run: list[str] = field(default_factory=list)  # steps a stop signal kept from starting

    @property
    def runs(self) -> list[tuple[str, str, bool]]:
        """(what, run_id, success) of every step that ran."""
        return [(s.what, s.run_id, s.ok) for s in self.steps if s.status != "skipped"]

    @property
    def failures(self) -> list[StepOutcome]:
        return [s for s in self.steps if s.status == "failed"]

    @property
    def success(self) -> bool:
        return all(s.ok for s in self.steps)


def dagster_dev_hint(pipeline: PipelineResource) -> str:
    """The command that opens this home's runs in Dagster's UI, with the environment its runs need to find
    the same home, profile, settings and inbox."""
    from alignment_pipeline import env as env_names
    from alignment_pipeline.config import DEFAULT_PROFILE

    layout = pipeline.layout()
    env = {env_names.HOME: str(layout.root)}
    profile = pipeline.config().profile
    if profile != DEFAULT_PROFILE:
        env[env_names.PROFILE] = profile
    if pipeline.settings_file:
        env[env_names.SETTINGS] = str(os.path.abspath(os.path.expanduser(pipeline.settings_file)))
    if pipeline.inbox:
        env[env_names.INBOX] = str(pipeline.inbox_dir())
    env["DAGSTER_HOME"] = str(layout.dagster_home)
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " dagster dev -w workspace.yaml"


# --- runs of the workspace's code location ---------------------------------------------------------------------

#: the module workspace.yaml loads; `dagster dev -w workspace.yaml` names its code location after it
DEFINITIONS_MODULE = "alignment_pipeline.definitions"


def workspace_location_origin():
    """The code location of the README's `dagster dev -w workspace.yaml` (one `python_module` entry), as a run
    launched from the UI records it."""
    from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    return ManagedGrpcPythonEnvCodeLocationOrigin(LoadableTargetOrigin(module_name=DEFINITIONS_MODULE),
                                                  location_name=DEFINITIONS_MODULE)


def job_origins(job_name: str):
    """(remote origin, code origin) of the workspace's job `job_name`: the UI lists a run by the first (its
    repository label); a run worker would load the job from the second."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.origin import DEFAULT_DAGSTER_ENTRY_POINT, JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin

    remote = RemoteJobOrigin(RemoteRepositoryOrigin(workspace_location_origin(), SINGLETON_REPOSITORY_NAME), job_name)
    code = JobPythonOrigin(job_name, RepositoryPythonOrigin(
        sys.executable, ModuleCodePointer(DEFINITIONS_MODULE, "defs", os.getcwd()),
        entry_point=DEFAULT_DAGSTER_ENTRY_POINT))
    return remote, code


def execute_in_location(job_def: dg.JobDefinition, *, instance: dg.DagsterInstance, run_config: dict,
                        resources: dict, tags: dict, partition_key: str | None = None):
    """Execute `job_def` in this process as `execute_in_process` does (in-process executor, `resources` bound,
    failures in the result, not raised), in a run recorded with the workspace's origin and the code location's
    job snapshot: without them the UI lists the run on no job page and warns that re-executing it may run a
    different version."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.execution.build_resources import wrap_resources_for_execution
    from dagster._core.execution.execute_in_process import merge_run_tags
    from dagster._core.snap import snapshot_from_execution_plan

    job = InMemoryJob(job_def.as_ephemeral_job(resource_defs=wrap_resources_for_execution(resources), input_values={}))
    # validates the partition key and adds its tags, as execute_in_process does
    run_tags = merge_run_tags(job_def, partition_key, tags, asset_selection=None, instance=instance,
                              run_config=run_config)
    plan = create_execution_plan(job, run_config=run_config, instance_ref=instance.get_ref(), tags=run_tags)
    remote, code = job_origins(job_def.name)
    run = instance.create_run(
        job_name=job_def.name, run_id=None, run_config=run_config, status=None, tags=run_tags, root_run_id=None,
        parent_run_id=None, step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=snapshot_from_execution_plan(plan, job_def.get_job_snapshot_id()),
        job_snapshot=job_def.get_job_snapshot(), parent_job_snapshot=job_def.get_parent_job_snapshot(),
        asset_selection=None, asset_check_selection=None, resolved_op_selection=None, op_selection=None,
        remote_job_origin=remote, job_code_origin=code, asset_graph=job_def.asset_layer.asset_graph)
    return execute_run(job, run, instance, raise_on_error=False)


# --- runs a killed demo left behind -------------------------------------------------------------------------


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that started the run (from its RUN_START event), if recorded."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event is not None else None


def fail_orphaned_runs(instance: dg.DagsterInstance) -> dict[str, str]:
    """Mark failed the runs that are STARTED but whose process (from the RUN_START event) is gone: a killed
    demo or run worker. Runs without a recorded pid, or whose pid is alive, are left alone. Returns
    {run_id: note} of the runs marked."""
    notes = {}
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = _run_pid(instance, run.run_id)
        if pid is None or pid_alive(pid):
            continue
        instance.report_run_failed(run, message=f"its process {pid} is gone (killed?); marked failed by {ENDED_BY}")
        notes[run.run_id] = (f"Dagster run {run.run_id} ({run.job_name}) was STARTED but its process {pid} is "
                             "gone: marked failed")
    return notes


def end_stale_mlflow_runs(instance: dg.DagsterInstance, layout: HomeLayout,
                          killed: frozenset[str] = frozenset()) -> list[str]:
    """End the MLflow runs still RUNNING whose Dagster run (tag `dagster_run_id`, in this home's instance) has
    finished: FINISHED for a successful Dagster run, KILLED for a canceled one or one in `killed`, else FAILED.
    MLflow runs of other instances, or without the tag, are left alone."""
    from alignment_pipeline import tracking

    notes = []
    for run in tracking.running_runs(layout):
        dagster_run_id = run.data.tags.get("dagster_run_id")
        dagster_run = instance.get_run_by_id(dagster_run_id) if dagster_run_id else None
        if dagster_run is None or not dagster_run.is_finished:
            continue
        if dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            status = "FINISHED"
        elif dagster_run.status == dg.DagsterRunStatus.CANCELED or dagster_run_id in killed:
            status = "KILLED"
        else:
            status = "FAILED"
        tracking.end_run(layout, run.info.run_id, status,
                         note=f"{ENDED_BY}: Dagster run {dagster_run_id} is {dagster_run.status.value}")
        notes.append(f"MLflow run {run.info.run_id} ({run.info.run_name}) was RUNNING after Dagster run "
                     f"{dagster_run_id} ended: marked {status}")
    return notes


def recover_stale_runs(instance: dg.DagsterInstance, layout: HomeLayout) -> list[str]:
    """What a killed demo left RUNNING in this home, ended: see `fail_orphaned_runs`, `end_stale_mlflow_runs`."""
    failed = fail_orphaned_runs(instance)
    return list(failed.values()) + end_stale_mlflow_runs(instance, layout, killed=frozenset(failed))


# --- errors of a run -------------------------------------------------------------------------------------------


def _error_text(error) -> str:
    """The user code's error inside Dagster's wrappers, as `Type: message` (one line)."""
    seen: set[int] = set()
    while error.cls_name in _WRAPPERS and error.cause is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.cause
    text = (error.message or "").strip()
    # "dagster._core.definitions.events.Failure: ..." -> "Failure: ..."
    text = re.sub(r"^[\w.]+\.(\w+):", r"\1:", text, count=1)
    return " ".join(text.split()) or error.cls_name


def run_errors(result) -> str:
    """The errors of a failed run executed here: each failed step with its user-code error (steps that failed
    the same way are named together), else the run failure's own error."""
    by_error: dict[str, list[str]] = {}
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        text = data.user_failure_data.description if (data.user_failure_data and
                                                      data.user_failure_data.description) else None
        text = text or (_error_text(data.error) if data.error else "failed")
        by_error.setdefault(text, []).append(event.step_key)
    if by_error:
        return "; ".join(f"{', '.join(steps)}: {text}" for text, steps in by_error.items())
    failure = result.get_run_failure_event()
    data = failure.job_failure_data if failure is not None else None
    if data is not None and data.error is not None:
        return _error_text(data.error)
    return failure.message if failure is not None and failure.message else "the run failed"


#: metadata keys of an asset that ran but lacked the data to train or evaluate (defs/training.py, reward.py,
#: evaluation.py); their text says why
SHORTFALL_KEYS = ("not_trained", "not_run")


def shortfall_notes(result) -> list[str]:
    """`<asset>: <why>` for each materialization of the run that says it trained or evaluated nothing."""
    notes = []
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        for key in SHORTFALL_KEYS:
            if key in metadata:
                notes.append(f"{event.asset_key.to_user_string()}: {key.replace('_', ' ')}: {metadata[key].value}")
    return notes


def _exception_text(exc: BaseException) -> str:
    seen: set[int] = set()
    while type(exc).__name__ in _WRAPPERS and exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# --- the console -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Library info lines, warnings and progress bars off for the duration (errors still show); restored after."""
    with contextlib.suppress(ImportError):
        import mlflow  # noqa: F401  (configures its logger on import: do it before the level is set below)
    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    # lm-eval, datasets and TRL draw tqdm bars of their own, outside transformers' switch, and tqdm reads
    # TQDM_DISABLE only at import: the default of every bar is switched off instead (an explicit argument wins).
    import tqdm.std

    tqdm_init = tqdm.std.tqdm.__init__
    tqdm.std.tqdm.__init__ = functools.partialmethod(tqdm_init, disable=True)
    bars = None
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except ImportError:
        hf_logging = None
    try:
        for name, level in _QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        with warnings.catch_warnings():
            for module in ("transformers", "lm_eval", "datasets", "huggingface_hub", "torch", "accelerate", "peft",
                           "mlflow", "pydantic", "dagster"):
                warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
            yield
    finally:
        tqdm.std.tqdm.__init__ = tqdm_init
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        if hf_logging is not None and bars:
            hf_logging.enable_progress_bar()


def _lineage_text(pipeline: PipelineResource, summary: DemoSummary) -> None:
    """alignment_pipeline.summary.lineage_summary(warehouse); an error is recorded."""
    from alignment_pipeline.summary import lineage_summary

    try:
        summary.lineage = lineage_summary(pipeline.warehouse())
    except Exception as exc:  # reported by the caller, never hidden; the steps' outcome stands
        summary.lineage_error = _exception_text(exc)


# --- the demo ----------------------------------------------------------------------------------------------------


def run_demo(pipeline: PipelineResource, *, report: Callable[[str], None] = print, log_level: str = "INFO",
             quiet: bool = True, log_file: Path | None = None) -> DemoSummary:
    """Every inbox batch, training, then benchmarks, each a run of its named job in the home's instance.
    `report` gets one line as each step starts and one as it ends. `log_level`: Dagster's console log level for
    the runs (INFO: the assets' own progress lines, without the framework's DEBUG events). `quiet`: library
    info lines, warnings and progress bars off while it runs. `log_file`: everything the runs and libraries
    print (stdout and stderr) goes there instead of the console; `report` must then write to a stream bound
    before the call. Raises only before any run starts (no prompt files in the inbox); a failed step is in the
    summary."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(pipeline.layout().root / ".demo.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        # Two demos on one home would race on the same world's rows; the second stops before any run.
        raise HomeBusy(f"another demo is running on the home {pipeline.layout().root} "
                       f"(lock {lock.lock_file}); wait for it or use another --home") from None
    try:
        with contextlib.ExitStack() as stack:
            if quiet:
                stack.enter_context(quiet_libraries())
            if log_file is not None:
                stack.enter_context(output_to(log_file))
            with stop_on_signals() as stopper:
                summary = DemoSummary()
                try:
                    return _run_demo(pipeline, report=report, log_level=log_level, stopper=stopper, summary=summary)
                except DemoStopped as stop:
                    return _stopped(pipeline, summary, stop.signum, report)
    finally:
        lock.release()


# --- stopping when told (alignment_pipeline/stopping.py) -------------------------------------------------------


def _stopped(pipeline: PipelineResource, summary: DemoSummary, signum: int, report: Callable[[str], None]
             ) -> DemoSummary:
    """After a stop signal: no step starts; what the running step left (torchrun, its workers, any child) is
    terminated; runs of this process still STARTED, and the one the signal interrupted, are marked CANCELED and
    their MLflow runs KILLED; one line says what was done and what was not."""
    import signal as signals

    summary.stopped_by = signum
    name = signals.Signals(signum).name
    killed = terminate_tree()
    layout = pipeline.layout()
    instance = home_instance(layout)
    canceled = {s.run_id for s in summary.steps if s.status == "canceled" and s.run_id}
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if _run_pid(instance, run.run_id) == os.getpid():
            canceled.add(run.run_id)
    for run_id in canceled:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status != dg.DagsterRunStatus.CANCELED:
            instance.report_run_canceled(run, message=f"stopped by {name}; marked canceled by {ENDED_BY}")
    try:
        summary.ended += end_stale_mlflow_runs(instance, layout, killed=frozenset(canceled))
    except Exception as exc:  # reported; the next demo start ends them
        report(f"could not end the MLflow runs of the canceled run: {_exception_text(exc)}")
    planned = [f"batch {b}" for b in summary.batches] + ["training"] + [f"benchmarks {c}" for c in MODELS]
    seen = {s.what for s in summary.steps}
    summary.not_run = [what for what in planned if what not in seen]
    done = [s.what for s in summary.steps if s.status != "canceled"]
    report(f"stopped by {name}: done {', '.join(done) or 'nothing'}; canceled "
           f"{', '.join(s.what for s in summary.steps if s.status == 'canceled') or 'nothing'}; not run "
           f"{', '.join(summary.not_run) or 'nothing'}"
           + (f"; {len(killed)} process(es) of the step terminated" if killed else ""))
    return summary


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """sys.stdout and sys.stderr appended to `path` for the duration: Dagster's console log, trainers' printed
    logs and progress bars land in the log file, and the console keeps one line per step."""

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8") as stream, \
            contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield


class HomeBusy(RuntimeError):
    """Another demo holds the home."""


def _run_demo(pipeline: PipelineResource, *, report: Callable[[str], None], log_level: str,
              stopper: Stopper | None = None, summary: DemoSummary | None = None) -> DemoSummary:
    from alignment_pipeline.definitions import build_definitions

    layout = pipeline.layout()
    instance = home_instance(layout)
    stopper = stopper if stopper is not None else Stopper()
    summary = summary if summary is not None else DemoSummary()
    summary.recovered = recover_stale_runs(instance, layout)
    for note in summary.recovered:
        report(note)

    files = list_inbox(pipeline.inbox_dir(), pipeline.config().prompts.extensions)
    summary.batches = [batch_key(p) for p in files]
    if not summary.batches:
        raise FileNotFoundError(f"no prompt files in the inbox {pipeline.inbox_dir()}")
    instance.add_dynamic_partitions(prompt_batches.name, summary.batches)

    defs = build_definitions()
    resources = {"pipeline": pipeline}
    run_config = {"loggers": {"console": {"config": {"log_level": log_level.upper()}}}}

    def skip(what: str, job: dg.UnresolvedAssetJobDefinition, why: str) -> None:
        summary.steps.append(StepOutcome(what, job.name, "skipped", error=why))
        report(f"skipped {what}: {why}")

    def step(what: str, job: dg.UnresolvedAssetJobDefinition, partition_key: str | None = None):
        stopper.check()  # a stop signal arrived: nothing more starts
        report(f"start {what} (job {job.name})")
        started = time.monotonic()
        result = None
        try:
            result = execute_in_location(defs.resolve_job_def(job.name), instance=instance, run_config=run_config,
                                         resources=resources, tags=DEMO_TAGS, partition_key=partition_key)
        except Exception as exc:  # before or around the run (definitions, partition, storage): recorded, not raised
            outcome = StepOutcome(what, job.name, "failed", error=_exception_text(exc))
        else:
            ok = result.success
            outcome = StepOutcome(what, job.name, "ok" if ok else "failed", run_id=result.run_id,
                                  error="" if ok else run_errors(result), notes=shortfall_notes(result))
        outcome.seconds = round(time.monotonic() - started, 1)
        if stopper.requested:  # the signal interrupted this run (Dagster's handlers had it): canceled, then stop
            import signal as signals

            outcome.status, outcome.error = "canceled", f"interrupted by {signals.Signals(stopper.signum).name}"
            summary.steps.append(outcome)
            raise DemoStopped(stopper.signum)
        summary.steps.append(outcome)
        try:  # runs a killed step left RUNNING
            summary.ended += end_stale_mlflow_runs(instance, layout)
        except Exception as exc:  # reported; the next demo start tries again
            report(f"could not end the MLflow runs of finished Dagster runs: {_exception_text(exc)}")
        report(f"{'done' if outcome.ok else 'FAILED'} {what} in {outcome.seconds:.1f}s"
               + (f" (run {outcome.run_id})" if outcome.run_id else "")
               + (f": {outcome.error}" if outcome.error else ""))
        for note in outcome.notes:  # ran, but without the data to train or evaluate: said, never a plain success
            report(f"  warning: {note}")
        return result

    batch_results = [step(f"batch {batch}", batch_lineage_job, batch) for batch in summary.batches]
    benchmark_whats = [f"benchmarks {c}" for c in MODELS]
    if not all(r is not None and r.success for r in batch_results):
        why = "a batch failed"
        skip("training", training_job, why)
        for what in benchmark_whats:
            skip(what, benchmark_job, why)
    else:
        training = step("training", training_job)
        trained = {key.path[-1] for key in (
            {e.asset_key for e in training.get_asset_materialization_events()} if training is not None else set())}
        for checkpoint, what in zip(MODELS, benchmark_whats, strict=True):
            if checkpoint == "base" or (training is not None and training.success) or checkpoint in trained:
                step(what, benchmark_job, checkpoint)
            else:
                skip(what, benchmark_job, f"training did not produce checkpoint {checkpoint}")
    _lineage_text(pipeline, summary)
    return summary
