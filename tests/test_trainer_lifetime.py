"""Trainers die with the process that started them (torchrun runs under the guard, each worker calls
`die_with_parent`), and a stage refuses to train while another live trainer holds its output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from alignment_pipeline.training import checkpointing as ckpt
from alignment_pipeline.training.launch import GUARD, launch_command


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


# The parent starts a child the way the checkpoint asset starts torchrun (through the guard), reports the child's
# pid, and waits; the child (a stand-in for torchrun) sleeps far longer than the test.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-m", sys.argv[1], "child_sleeper"])
    print(child.pid, flush=True)
    time.sleep(60)
""")
# It marks that it runs, so the guard (which runs first) has acted: a fixed wait lost that race on a busy machine.
SLEEPER = "import os, pathlib, time\npathlib.Path(os.environ['SLEEPER_MARK']).touch()\ntime.sleep(60)\n"


def test_a_guarded_child_dies_when_its_parent_is_killed(tmp_path):
    (tmp_path / "child_sleeper.py").write_text(SLEEPER)
    mark = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "SLEEPER_MARK": str(mark)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, GUARD], stdout=subprocess.PIPE, text=True, env=env)
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while not mark.exists() and time.monotonic() < deadline:  # the guard has run, the sleeper sleeps
            time.sleep(0.05)
        assert mark.exists(), "the guarded child never started its module"
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)  # as `kill -9` of the demo
        parent.wait(timeout=10)
        assert _wait_gone(child_pid, 5), "the child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child_pid and _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_torchrun_is_started_under_the_guard():
    command = launch_command("sft", nproc_per_node=2, python="py")
    assert command[1:4] == ["-m", GUARD, "torch.distributed.run"]


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from alignment_pipeline.training.checkpointing import claim_output_dir
    claim_output_dir(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_live_trainer_holds_its_output_folder_until_it_is_gone(tmp_path):
    out = tmp_path / "stage"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ckpt.OutputBusy, match=f"process {holder.pid} "):
            ckpt.claim_output_dir(out)
        holder.kill()  # killed without releasing: the lock stays behind, naming a dead pid
        holder.wait(timeout=10)
        assert (out / ckpt.LOCK_FILE).exists()
        lock = ckpt.claim_output_dir(out)  # stale: taken over
        assert ckpt.claim_output_dir(out) == lock  # the same process may train the folder again
        ckpt.release_output_dir(lock)
        assert not lock.exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_training_refuses_a_folder_another_trainer_holds(tmp_path, home):
    from alignment_pipeline.paths import HomeLayout
    from alignment_pipeline.training.config import TrainingConfig
    from alignment_pipeline.training.synthetic import letter_groups
    from alignment_pipeline.training.trainer import TrainRequest, train

    out = tmp_path / "stage"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        request = TrainRequest(letter_groups(8, seed=1), objective="sft", base_model="tiny:tiny-64", out_dir=out,
                               config=TrainingConfig(max_steps=1, register_model=False), home=HomeLayout(home),
                               run_name="busy")
        with pytest.raises(ckpt.OutputBusy, match=str(holder.pid)):
            train(request)
        assert sorted(p.name for p in out.iterdir()) == [ckpt.LOCK_FILE]  # nothing else written
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_the_guard_undoes_a_blocked_or_ignored_signal_it_inherited():
    """A trainer started from a thread that blocks SIGTERM, or from a shell that ignores it, inherits that through
    exec; the guard clears both, so the kernel's signal still ends it."""
    code = ("import signal, sys\n"
            "from alignment_pipeline.training.guard import die_with_parent\n"
            "die_with_parent()\n"
            "blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())\n"
            "print(blocked, signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)\n")
    pre = ("import signal, subprocess, sys\n"
           "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
           "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
           f"sys.exit(subprocess.run([sys.executable, '-c', {code!r}]).returncode)\n")
    out = subprocess.run([sys.executable, "-c", pre], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
