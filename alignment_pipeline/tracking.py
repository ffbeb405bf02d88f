"""MLflow tracking: runs under the home directory by default (SQLite store, local artifacts), any remote
tracking URI otherwise. Runs carry the Dagster run id, partition and git commit; secrets never reach it."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from alignment_pipeline import env
from alignment_pipeline.paths import HomeLayout

EXPERIMENT = "alignment_pipeline"
# MLflow 3.x's UI opens an experiment on the view its `mlflow.experimentKind` tag names; without it, it guesses
# (the empty GenAI "Traces" view for a fresh experiment). The mlflow package has no Python constant for it:
# the key and values are the UI's (ExperimentKind in mlflow/server/js).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
_SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization|credential)", re.I)
REDACTED = "***"


def tracking_uri(home: HomeLayout, uri: str | None = None) -> str:
    """`uri`, else $ALIGNMENT_MLFLOW_URI (a remote server), else the SQLite store in the home."""
    return uri or env.get(env.MLFLOW_URI) or f"sqlite:///{home.mlflow_db}"


def configure(home: HomeLayout, uri: str | None = None, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the home (or `uri`) and make sure the experiment exists, marked as a model-training
    experiment (an existing one is marked when next used), with its artifacts under the home. Returns the
    tracking URI in use."""
    import mlflow
    from mlflow.exceptions import MlflowException

    resolved = tracking_uri(home, uri)
    # Decided before set_tracking_uri, which also exports MLFLOW_TRACKING_URI.
    local = resolved == f"sqlite:///{home.mlflow_db}"
    if local:
        prepare_local_store(home)
    mlflow.set_tracking_uri(resolved)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        location = home.mlflow_artifacts.as_uri() if local else None
        try:
            mlflow.create_experiment(experiment, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException as exc:  # another process created it in between
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    elif found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        mlflow.MlflowClient().set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    mlflow.set_experiment(experiment)
    return resolved


def prepare_local_store(home: HomeLayout) -> None:
    """Keep a new home's MLflow store from pointing outside the home. MLflow creates the `Default` experiment
    (id 0) when it first opens a database, with its artifacts under the client's default root, `./mlruns` of
    whatever the working directory is; a new store is created here with that root under the home
    ($ALIGNMENT_HOME/mlartifacts/0). A store that already exists is left as it is."""
    if home.mlflow_db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{home.mlflow_db}", home.mlflow_artifacts.as_uri())
    store.engine.dispose()


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def redact(values: Mapping[str, object]) -> dict[str, object]:
    """Flatten nested params and blank anything whose key names a secret."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            last = prefix.rsplit(".", 1)[-1]
            # key *names* (api_key_env) are fine; values of secret-named keys are not
            secret = _SECRET_NAME.search(last) and not last.endswith("_env")
            flat[prefix] = REDACTED if secret else value

    walk("", dict(values))
    return flat


def run_tags(*, dagster_run_id: str | None = None, partition: str | None = None,
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    tags = {"git_commit": git_commit()}
    if dagster_run_id:
        tags["dagster_run_id"] = dagster_run_id
    if partition:
        tags["dagster_partition"] = partition
    tags.update(extra or {})
    return tags


@contextmanager
def start_run(home: HomeLayout, run_name: str, *, tags: Mapping[str, str] | None = None,
              params: Mapping[str, object] | None = None, nested: bool = False,
              parent_run_id: str | None = None, uri: str | None = None,
              run_id: str | None = None) -> Iterator[object]:
    """An MLflow run with tags and redacted params; `parent_run_id` nests it under a curriculum run.
    `run_id` reopens that existing run instead (a resumed stage continues its curve there): tags are set
    again, params are not re-logged (MLflow params are immutable; the run already has them)."""
    import mlflow

    configure(home, uri)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if run_id:
        with mlflow.start_run(run_id=run_id, tags=all_tags or None, nested=nested) as run:
            yield run
        return
    status = "FAILED"
    try:
        with mlflow.start_run(run_name=run_name, tags=all_tags, nested=nested) as run:
            if params:
                # MLflow caps param values at 6000 chars; long values are truncated rather than failing the run.
                # An unset setting (None) is left out: a row reading "None" tells nothing.
                mlflow.log_params({k: str(v)[:6000] for k, v in redact(params).items() if v is not None})
            yield run
        status = "FINISHED"
    finally:
        if parent_run_id:
            # The parent only groups its children (created by `parent_run`, never entered): it ends with its
            # latest child, and a later child of the same Dagster run ends it again.
            mlflow.MlflowClient().set_terminated(parent_run_id, status=status)


def stage_run(home: HomeLayout, run_name: str, *, run_id: str | None = None, parent_run_id: str | None = None,
              tags: Mapping[str, object] | None = None,
              params: Mapping[str, object] | None = None) -> AbstractContextManager:
    """The run of one training stage, nested in the run already active in this process (if any). `run_id`
    reopens a resumed stage's run, so its curve continues there; its tags and params stay as first set."""
    import mlflow

    nested = mlflow.active_run() is not None
    if run_id:
        return start_run(home, run_name, nested=nested, run_id=run_id)
    return start_run(home, run_name, tags={str(k): str(v) for k, v in (tags or {}).items()}, params=params,
                     nested=nested, parent_run_id=parent_run_id)


def evaluation_run(home: HomeLayout, run_name: str, *, tags: Mapping[str, object],
                   params: Mapping[str, object]) -> str:
    """A finished run of its own for a model that has no training run (the base model), so its benchmark metrics
    sit in MLflow beside the checkpoints'; returns its id."""
    with start_run(home, run_name, tags={str(k): str(v) for k, v in tags.items()}, params=params) as run:
        return run.info.run_id


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None) -> None:
    """On the active run."""
    import mlflow

    mlflow.log_metrics(dict(metrics), step=step)


def add_metrics(home: HomeLayout, run_id: str, metrics: Mapping[str, float]) -> None:
    """Metrics known only once a run has ended (what its steps reached), added to that run."""
    import mlflow
    from mlflow.entities import Metric

    configure(home)
    stamp = int(time.time() * 1000)
    mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])


def last_logged_step(run_id: str, key: str) -> int:
    """The highest step at which the run holds metric `key` (0 when none): where a resumed run's logging
    continues without repeating a step."""
    import mlflow

    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return max((m.step for m in history), default=0)


def log_trainer_history(log_history: list[dict]) -> float | None:
    """A Hugging Face / TRL trainer's `state.log_history` on the active run (numbers as `train/<key>` at their step);
    returns the run's final `train_loss` (None when it logged none)."""
    for entry in log_history:
        log_metrics({f"train/{k}": float(v) for k, v in entry.items() if k != "step" and isinstance(v, (int, float))},
                    step=int(entry.get("step", 0)))
    return next((e["train_loss"] for e in reversed(log_history) if "train_loss" in e), None)


def log_artifact(path: Path) -> None:
    import mlflow

    mlflow.log_artifact(str(path))


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


def set_tag(key: str, value: str) -> None:
    import mlflow

    mlflow.set_tag(key, value)


def log_and_register(model_dir: Path, *, run_id: str, name: str, tags: dict[str, str],
                     description: str | None = None) -> str:
    """Log the saved model directory as the active run's `model` artifact and register it as a new version of
    `name`, tagged with its lineage. `description` (what it was trained on, how, for how long) describes the
    version and, as the newest, the registered model. Returns "name/version".

    The directory is logged as plain artifacts (it loads with `from_pretrained` after download) and the
    version is created with the registry client: this needs no network and no flavor-specific packaging."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        if description:
            client.update_registered_model(name, description=description)
    version = client.create_model_version(name, source=f"{mlflow.get_artifact_uri('model')}", run_id=run_id,
                                          tags=tags, description=description)
    return f"{name}/{version.version}"


# A directory being written before it is renamed into place (checkpointing.save_final_model's `.tmp-model-<pid>`)
_STAGING_DIR = re.compile(r"^\.tmp-(.+)-\d+$")


def model_reference(model: str | Path, home: HomeLayout) -> str:
    """How a tag names a model: a hub id or project reference (`tiny:...`) as given; a directory in the home by its
    place there (`checkpoints/stage1_imitation/model`), so that the tag means the same on every machine; a staging
    directory by the name it is renamed to."""
    text = str(model)
    if not Path(text).is_absolute():
        return text
    parts = [(_STAGING_DIR.match(p).group(1) if _STAGING_DIR.match(p) else p) for p in Path(text).parts]
    path = Path(*parts)
    root = home.root.resolve()
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def parent_run(home: HomeLayout, run_name: str, *, tags: Mapping[str, str], uri: str | None = None) -> str:
    """The id of the run named `run_name` carrying `tags`, created if missing: the steps of one Dagster run
    (each its own process) nest their runs under one parent this way."""
    import mlflow

    configure(home, uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    clauses = [f"tags.mlflow.runName = '{run_name}'"] + [f"tags.{k} = '{v}'" for k, v in tags.items()]
    found = mlflow.search_runs([experiment.experiment_id], filter_string=" and ".join(clauses),
                               max_results=1, output_format="list")
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    return client.create_run(experiment.experiment_id, run_name=run_name, tags=dict(tags)).info.run_id


def running_runs(home: HomeLayout, uri: str | None = None) -> list:
    """The experiment's runs still RUNNING (newest first). Nothing is created: none when the home's local store
    or the experiment does not exist yet."""
    import mlflow

    resolved = tracking_uri(home, uri)
    if resolved == f"sqlite:///{home.mlflow_db}" and not home.mlflow_db.exists():
        return []
    client = mlflow.MlflowClient(resolved)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                   max_results=5000))


def end_run(home: HomeLayout, run_id: str, status: str = "FINISHED", *, note: str | None = None,
            uri: str | None = None) -> None:
    """Mark a run terminated (FINISHED | FAILED | KILLED), e.g. one a killed process left RUNNING; `note`
    becomes its `alignment/ended_by` tag."""
    import mlflow

    resolved = tracking_uri(home, uri)
    if resolved == f"sqlite:///{home.mlflow_db}":
        prepare_local_store(home)
    client = mlflow.MlflowClient(resolved)
    if note:
        client.set_tag(run_id, "alignment/ended_by", note[:5000])
    client.set_terminated(run_id, status=status)


# Where `mlflow ui` serves by default: the link a run in the home's local store gets.
LOCAL_UI = "http://127.0.0.1:5000"


# The experiment's training runs as one flat list: with a search filter and a sort other than by date the UI shows
# child runs at the top level instead of folded under their `curriculum` parent; every stage, baseline and the
# reward model carries `checkpoint_kind`, the grouping parents do not.
TRAINING_RUNS_FILTER = "tags.checkpoint_kind LIKE '%'"
TRAINING_RUNS_ORDER = "tags.`mlflow.runName`"


def experiment_url(home: HomeLayout, uri: str | None = None) -> str | None:
    """The browser address of the experiment's training runs list (Model training view, runs unfolded, ordered by
    name); None before the experiment exists."""
    from urllib.parse import urlencode

    import mlflow

    resolved = tracking_uri(home, uri)
    if resolved == f"sqlite:///{home.mlflow_db}" and not home.mlflow_db.exists():
        return None
    experiment = mlflow.MlflowClient(resolved).get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    server = resolved.rstrip("/") if resolved.startswith("http") else LOCAL_UI
    query = urlencode({"searchFilter": TRAINING_RUNS_FILTER, "orderByKey": TRAINING_RUNS_ORDER, "orderByAsc": "true"})
    return f"{server}/#/experiments/{experiment.experiment_id}/runs?{query}"


def run_url(home: HomeLayout, run_id: str, uri: str | None = None) -> str:
    """The browser address of a run's page: on the MLflow server when tracking to one, else on the local UI
    that `ui_command` starts (`mlflow ui`'s default address)."""
    import mlflow

    resolved = tracking_uri(home, uri)
    run = mlflow.MlflowClient(resolved).get_run(run_id)
    server = resolved.rstrip("/") if resolved.startswith("http") else LOCAL_UI
    return f"{server}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def ui_command(home: HomeLayout, uri: str | None = None) -> str | None:
    """The command that serves the runs' pages at LOCAL_UI; None when tracking to a server."""
    resolved = tracking_uri(home, uri)
    return None if resolved.startswith("http") else f"mlflow ui --backend-store-uri {resolved}"
