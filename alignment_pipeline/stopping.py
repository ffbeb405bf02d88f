"""Stopping the demo when told: SIGTERM or SIGINT (Ctrl-C) ends it within seconds instead of failing one step and
carrying on.

While a Dagster run executes in-process, Dagster's own handlers take both signals and interrupt the running step
(PipesSubprocessClient passes the interrupt on to torchrun); between runs the demo's handlers are in place. Either
way the signal number also reaches a wakeup pipe (`signal.set_wakeup_fd`), which no handler replaces, so the demo
learns of every signal, whoever handled it. Then it launches nothing more, terminates what the running step left
(every descendant process: torchrun and its workers, servers, tokenizer pools), marks the interrupted Dagster run
CANCELED and its MLflow runs KILLED, and the command exits 128 + the signal (130 for INT, 143 for TERM). A later
demo resumes: the finished steps' results are kept and nothing is left STARTED, RUNNING or locked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DemoStopped(BaseException):
    """A stop signal arrived. A BaseException, so a step's `except Exception` bookkeeping never swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class Stopper:
    """Which stop signal arrived, if any (see the module doc)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._read_fd: int | None = None

    @property
    def requested(self) -> bool:
        self.poll()
        return self.signum is not None

    def poll(self) -> int | None:
        """Drain the wakeup pipe; the first stop signal seen is kept."""
        if self._read_fd is None:
            return self.signum
        while True:
            try:
                data = os.read(self._read_fd, 512)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:
                break
            for number in data:
                if number in STOP_SIGNALS and self.signum is None:
                    self.signum = number
        return self.signum

    def check(self) -> None:
        """Raise DemoStopped when a stop signal has arrived."""
        if self.requested:
            raise DemoStopped(self.signum)

    def _handler(self, signum: int, _frame) -> None:
        if self.signum is not None:
            return  # already stopping: a second signal changes nothing
        self.signum = signum
        raise DemoStopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stopper]:
    """Install the demo's stop handling for the duration (main thread only; elsewhere signals stay as they are
    and the Stopper never fires). Restores the previous handlers and wakeup fd after."""
    stopper = Stopper()
    if threading.current_thread() is not threading.main_thread():
        yield stopper
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    stopper._read_fd = read_fd
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, stopper._handler)
        yield stopper
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        stopper.poll()
        stopper._read_fd = None
        os.close(read_fd)
        os.close(write_fd)


# -- the process tree ------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below `pid` (default: this one), children before grandchildren; read from /proc."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue += children.get(child, [])
    return found


def terminate_tree(pid: int | None = None, *, grace_s: float = 3.0) -> list[int]:
    """SIGTERM every descendant of `pid`, then SIGKILL those still there after `grace_s`; direct children of this
    process are reaped. Returns the pids signalled."""
    targets = descendants(pid)
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap()
        if not set(descendants(pid)) & set(targets):
            break
        time.sleep(0.05)
    for target in set(descendants(pid)) & set(targets):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
    _reap()
    return targets


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
