"""Dagster's UI on the home of a finished smoke demo lists the demo's runs where people look for them: each job's
page (and the Overview, which groups runs by their code location) only shows runs recorded with the workspace's
code location. The webserver is started with the environment the demo prints, and asked through GraphQL what
those pages ask. MLflow's UI, started with the command the project prints, is asked through its REST API what its
training runs list and model registry show."""

import contextlib
import json
import re
import shlex
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from process_group import stop_group

from alignment_pipeline import tracking
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.demo import DEFINITIONS_MODULE, DEMO_TAGS, home_instance, workspace_location_origin
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.stages import CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("batch_lineage", "training", "benchmarks")
REPOSITORY = "__repository__"

JOB_PAGE = """query ($selector: PipelineSelector!) { pipelineOrError(params: $selector) { __typename
  ... on Pipeline { name pipelineSnapshotId
    runs(limit: 100) { id status pipelineSnapshotId repositoryOrigin { repositoryLocationName repositoryName } } }
  ... on PythonError { message } } }"""
RUNS_PAGE = """query ($filter: RunsFilter) { runsOrError(filter: $filter) {
  ... on Runs { results { id repositoryOrigin { repositoryLocationName repositoryName } } } } }"""


def test_demo_runs_carry_the_workspace_code_location():
    """The origin the demo records is the one `dagster dev -w workspace.yaml` builds from the workspace file."""
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    (served,) = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    assert workspace_location_origin() == served
    assert served.location_name == DEFINITIONS_MODULE


def _hint_env(stdout: str) -> dict[str, str]:
    """The variables of the `Dagster UI: ... dagster dev -w workspace.yaml` line the demo prints last."""
    line = re.search(r"^Dagster UI: (.*)$", stdout, re.MULTILINE)
    assert line, stdout[-3000:]
    words = shlex.split(line.group(1))
    return dict(w.split("=", 1) for w in words[:words.index("dagster")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                     data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    body = json.loads(urllib.request.urlopen(request, timeout=60).read())
    assert "errors" not in body, body
    return body["data"]


def _job_page(port: int, job: str) -> dict:
    selector = {"repositoryLocationName": DEFINITIONS_MODULE, "repositoryName": REPOSITORY, "pipelineName": job}
    return _graphql(port, JOB_PAGE, {"selector": selector})["pipelineOrError"]


@contextlib.contextmanager
def _serving(command: list[str], *, cwd: Path, env: dict, log: Path, ready, name: str):
    """`command` in its own process group (stopped whole on exit), once `ready()` answers without raising."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError, AssertionError):
                ready()
                break
            time.sleep(1)
        assert proc.poll() is None, f"{name} exited: {log.read_text()[-3000:]}"
        yield
    finally:
        stop_group(proc, timeout=20)


def _webserver(env: dict, port: int, log: Path):
    """dagster-webserver on the workspace, once its first job page answers."""

    def ready():
        assert _job_page(port, JOBS[0])["__typename"] == "Pipeline"

    return _serving(["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT,
                    env=env, log=log, ready=ready, name="dagster-webserver")


@pytest.mark.slow
def test_each_job_page_lists_the_demo_runs(smoke_demo, tmp_path):
    home, env, done, _seconds = smoke_demo
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    instance = home_instance(HomeLayout(Path(home)))
    demo_runs = {job: {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=job, tags=DEMO_TAGS))}
                 for job in JOBS}
    assert all(demo_runs.values()), demo_runs
    assert all(r.remote_job_origin is not None for r in instance.get_runs(dg.RunsFilter(tags=DEMO_TAGS)))

    port = _free_port()
    with _webserver({**env, **_hint_env(done.stdout)}, port, tmp_path / "webserver.log"):
        origin = {"repositoryLocationName": DEFINITIONS_MODULE, "repositoryName": REPOSITORY}
        for job in JOBS:
            page = _job_page(port, job)
            assert page["__typename"] == "Pipeline", page
            # other tests on the same home may add runs of their own: every demo run is listed
            assert {r["id"] for r in page["runs"]} >= demo_runs[job], job
            # recorded with the code location's own snapshot: re-executing does not warn of another version
            assert {(r["pipelineSnapshotId"], json.dumps(r["repositoryOrigin"], sort_keys=True))
                    for r in page["runs"] if r["id"] in demo_runs[job]} == {
                (page["pipelineSnapshotId"], json.dumps(origin, sort_keys=True))}
            listed = _graphql(port, RUNS_PAGE, {"filter": {"pipelineName": job}})["runsOrError"]["results"]
            assert {r["id"] for r in listed} >= demo_runs[job]
            assert all(r["repositoryOrigin"] == origin for r in listed if r["id"] in demo_runs[job]), listed


def _mlflow(port: int, path: str, body: dict | None = None, **query: object) -> dict:
    """One call of MLflow's REST API (`/api/2.0/mlflow/<path>`): GET with `query`, POST with a JSON `body`."""
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=60).read())


def _mlflow_ui(env: dict, home: HomeLayout, port: int, log: Path):
    """The `mlflow ui` command the project prints for the home (one worker, no job runner), once it answers. It runs
    in the log's folder: nothing it writes lands in the project."""
    command = [*shlex.split(tracking.ui_command(home)), "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    return _serving(command, cwd=log.parent, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, log=log,
                    ready=lambda: _mlflow(port, "experiments/search", max_results=100), name="mlflow ui")


def _pairs(entries: list[dict] | None) -> dict[str, str]:
    """MLflow's `[{key, value}, ...]` (params, tags) as a dict."""
    return {e["key"]: e["value"] for e in entries or []}


# The Stable Alignment loss's settings that carry no objective prefix (training/run_params.py).
CONTRASTIVE = {"margin", "rating_scale", "ratio", "aggregate", "num_responses"}


@pytest.mark.slow
def test_mlflow_ui_lists_one_run_per_checkpoint_with_its_own_settings(smoke_demo, tmp_path):
    """What MLflow's UI shows of the demo: the training runs list (the `mlflow_training_runs` link's filter and
    order) holds one run per checkpoint kind, each with its own objective's settings only and, once benchmarked,
    the benchmark values of the warehouse as `bench/<task>/<metric>`; the registry holds every model, described,
    its tags free of the home's paths."""
    from alignment_pipeline.training.objectives import OBJECTIVES
    from alignment_pipeline.training.reward_model import NAME as REWARD_MODEL

    home, env, done, _seconds = smoke_demo
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    layout = HomeLayout(Path(home))
    (training_run,) = home_instance(layout).get_runs(dg.RunsFilter(job_name="training", tags=DEMO_TAGS))
    warehouse = PipelineResource(home=str(home), profile="smoke").warehouse()
    benchmarks = warehouse.query("SELECT checkpoint, task, metric, value FROM benchmark_results "
                                 "WHERE value IS NOT NULL")
    # what each run is: its objective, and the settings sections it logs besides the training config
    expected = {c.kind: (c.objective, ("rlhf.",) if c.online else ()) for c in CHECKPOINTS}
    expected[REWARD_MODEL] = (REWARD_MODEL, ("reward_model.",))

    port = _free_port()
    with _mlflow_ui({**env, **_hint_env(done.stdout)}, layout, port, tmp_path / "mlflow.log"):
        experiments = _mlflow(port, "experiments/search", max_results=100)["experiments"]
        (experiment,) = [e for e in experiments if e["name"] == tracking.EXPERIMENT]
        # opens on the model-training view, not the GenAI one
        assert _pairs(experiment.get("tags"))[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND

        # other tests on the same home may add runs of their own: the demo's are those of its training job
        listed = _mlflow(port, "runs/search", {
            "experiment_ids": [e["experiment_id"] for e in experiments],
            "filter": f"{tracking.TRAINING_RUNS_FILTER} and tags.dagster_run_id = '{training_run.run_id}'",
            "order_by": [f"{tracking.TRAINING_RUNS_ORDER} ASC"], "max_results": 1000})["runs"]
        names = [r["info"]["run_name"] for r in listed]
        assert names == sorted(names), names
        kinds = [_pairs(r["data"].get("tags"))["checkpoint_kind"] for r in listed]
        assert sorted(kinds) == sorted(expected), kinds  # one run per kind, the curriculum parents left out
        assert names == kinds

        for run in listed:
            kind, params = run["info"]["run_name"], _pairs(run["data"].get("params"))
            objective, sections = expected[kind]
            assert run["info"]["status"] == "FINISHED", (kind, run["info"])
            # its own settings are there ...
            own = {"stable_alignment": "margin", "rlhf": "rlhf.kl_beta", "sppo_online": "sppo_eta",
                   REWARD_MODEL: "reward_model.learning_rate"}.get(objective, f"{objective}_learning_rate")
            assert own in params, (kind, sorted(params))
            if objective != REWARD_MODEL:
                assert params["objective"] == objective, (kind, params["objective"])
            # ... and no other objective's: `dpo_beta` only on DPO runs, the hinge's margin only on Stable
            # Alignment's, the reward model's and RLHF's sections only on their own runs
            mine = {objective, "sppo"} if objective == "sppo_online" else {objective}
            foreign = {k for k in params
                       if any(k.startswith(f"{o}_") for o in OBJECTIVES if o not in mine)
                       or (k in CONTRASTIVE and objective != "stable_alignment")
                       or (k.startswith(("rlhf.", "reward_model.")) and not k.startswith(sections))}
            if objective == REWARD_MODEL:
                foreign.discard("dpo_pairs")  # how it forms its preference pairs (training.dpo_pairs)
            assert foreign == set(), (kind, sorted(foreign))

            # the benchmark values of the checkpoint's partition, on its training run (the reward model has none)
            logged = {m["key"]: m["value"] for m in run["data"].get("metrics", []) if m["key"].startswith("bench/")}
            measured = {f"bench/{r['task']}/{r['metric']}": r["value"]
                        for r in benchmarks.filter(benchmarks["checkpoint"] == kind).iter_rows(named=True)}
            assert set(logged) == set(measured), (kind, sorted(set(logged) ^ set(measured)))
            assert all(logged[k] == pytest.approx(v) for k, v in measured.items()), (kind, logged, measured)
            assert bool(measured) == (kind != REWARD_MODEL), kind
            # each carries its n and data source as a tag of the same key
            tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            assert all(re.fullmatch(r"n=\d+, (real|proxy|fixture)", tags.get(k, "")) for k in measured), (kind, tags)

        # the base model's evaluation has a run of its own, with its benchmark values
        (base_run,) = _mlflow(port, "runs/search", {
            "experiment_ids": [e["experiment_id"] for e in experiments],
            "filter": "tags.checkpoint_kind = 'base'", "max_results": 10})["runs"]
        base_logged = {m["key"] for m in base_run["data"].get("metrics", []) if m["key"].startswith("bench/")}
        assert base_logged == {f"bench/{r['task']}/{r['metric']}" for r in
                               benchmarks.filter(benchmarks["checkpoint"] == "base").iter_rows(named=True)}

        # the registry: every checkpoint and the reward model, described, tagged without the home's paths
        run_ids = {r["info"]["run_name"]: r["info"]["run_id"] for r in listed}
        registered = {m["name"]: m for m in
                      _mlflow(port, "registered-models/search", max_results=1000).get("registered_models", [])}
        for kind in expected:
            name = f"alignment-pipeline-{kind}"
            assert name in registered, (name, sorted(registered))
            model = registered[name]
            versions = _mlflow(port, "model-versions/search", filter=f"name = '{name}'",
                               max_results=100)["model_versions"]
            assert run_ids[kind] in {v.get("run_id") for v in versions}, (kind, versions)
            descriptions = [model.get("description", ""), *(v.get("description", "") for v in versions)]
            assert descriptions[0].startswith(f"{kind}: ") and all(d.strip() for d in descriptions), descriptions
            tags = [*_pairs(model.get("tags")).values(), *(t for v in versions for t in _pairs(v.get("tags")).values())]
            assert not [t for t in tags + descriptions if "/tmp" in t or str(home) in t], (name, tags, descriptions)
