"""SIGTERM and SIGINT stop the demo: the running step is interrupted and its child processes end, nothing more
starts, its Dagster run is CANCELED (none is left STARTED), the console says what was done and not, and the
command exits 143 / 130 within seconds. The demo runs in a subprocess on the smoke profile; its first batch's
ingest step is replaced by a slow one that starts a child process, standing in for torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

DEMO = textwrap.dedent("""
    import os, subprocess, sys, time
    from pathlib import Path
    import alignment_pipeline.defs.prompts as prompts_defs

    marker = Path(sys.argv[2])

    def slow_ingest(*args, **kwargs):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        marker.write_text(str(child.pid))
        for _ in range(1200):  # bounded: two minutes at most
            time.sleep(0.1)
        raise RuntimeError("the slow step was never interrupted")

    prompts_defs.ingest_file = slow_ingest
    from alignment_pipeline.cli import app
    app(["--home", sys.argv[1], "--profile", "smoke", "demo"], prog_name="alignment-pipeline")
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_demo_within_seconds(tmp_path, sig, code):
    home, inbox, marker = tmp_path / "home", tmp_path / "inbox", tmp_path / "child.pid"
    inbox.mkdir()
    (inbox / "a.txt").write_text("First question?\n")
    (inbox / "b.txt").write_text("Second question?\n")
    env = {**os.environ, "ALIGNMENT_INBOX": str(inbox), "ALIGNMENT_HOME": str(home)}
    demo = subprocess.Popen([sys.executable, "-c", DEMO, str(home), str(marker)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    child = None
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), demo.communicate(timeout=30)[0]
        time.sleep(0.3)  # the pid is written before the file is closed
        child = int(marker.read_text())
        assert _alive(child)
        demo.send_signal(sig)
        sent = time.monotonic()
        output, _ = demo.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if demo.poll() is None:
            demo.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
    assert demo.returncode == code, output
    assert took < 10, f"exited {took:.1f}s after {sig.name}"
    assert not _alive(child), "the step's child process outlived the stopped demo"
    name = sig.name
    assert f"stopped by {name}: done nothing; canceled batch a" in output, output
    assert "not run batch b" in output and "training" in output.split("not run", 1)[1]

    from alignment_pipeline.demo import home_instance, recover_stale_runs
    from alignment_pipeline.paths import HomeLayout

    layout = HomeLayout(home)
    instance = home_instance(layout)
    runs = instance.get_runs()
    assert [r.status for r in runs] == [dg.DagsterRunStatus.CANCELED]
    assert recover_stale_runs(instance, layout) == []  # nothing left for a later demo to clean up
    from filelock import FileLock

    lock = FileLock(str(home / ".demo.lock"))
    lock.acquire(timeout=0)  # a later demo can start at once
    lock.release()
