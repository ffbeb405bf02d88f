"""Dagster's UI on the home of a finished smoke demo lists the demo's runs where people look for them: each job's
page (and the Overview, which groups runs by their code location) only shows runs recorded with the workspace's
code location. The webserver is started with the environment the demo prints, and asked through GraphQL what
those pages ask."""

import contextlib
import json
import re
import shlex
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from process_group import stop_group

from alignment_pipeline.demo import DEFINITIONS_MODULE, DEMO_TAGS, home_instance, workspace_location_origin
from alignment_pipeline.paths import HomeLayout

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
def _webserver(env: dict, port: int, log: Path):
    """dagster-webserver on the workspace, in its own process group (stopped whole on exit), once it answers."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError, AssertionError):
                if _job_page(port, JOBS[0])["__typename"] == "Pipeline":
                    break
            time.sleep(1)
        assert proc.poll() is None, f"dagster-webserver exited: {log.read_text()[-3000:]}"
        yield
    finally:
        stop_group(proc, timeout=20)


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
