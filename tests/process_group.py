"""Stopping a server a test started in its own process group (start_new_session=True): SIGTERM to the group, then
SIGKILL if it has not exited in time, so no child outlives the test."""

import contextlib
import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
