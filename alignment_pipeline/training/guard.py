"""Processes that die with their parent: a trainer left running after the demo or step that started it was killed
would keep writing a stage's checkpoints, model and MLflow run while a rerun trains the same stage.

    python -m alignment_pipeline.training.guard torch.distributed.run --nproc_per_node 2 ...

runs the named module (as `python -m` would) after `die_with_parent()`; the trainer processes torchrun starts call
`die_with_parent()` themselves (training/launch.py), so a killed step takes torchrun and its workers with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import runpy
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, *, poll_s: float = 1.0) -> str:
    """Have this process get `sig` when its parent dies. Linux: the kernel sends it (PR_SET_PDEATHSIG);
    elsewhere a daemon thread watches the parent's pid. If the parent is already gone (it died before this
    ran), the signal is sent now. Returns how: "pdeathsig" or "watchdog"."""
    parent = os.getppid()
    how = "watchdog"
    # A blocked or ignored signal is inherited through exec from whoever started us (a thread that blocks
    # signals, a shell's SIG_IGN): it would make the kernel's signal a no-op.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    try:
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    except ValueError:
        pass  # not the main thread: only its disposition could be ignored, and it cannot be changed from here
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0:
                how = "pdeathsig"
        except OSError:
            pass  # no libc to call: the watchdog below does the same, a moment later
    if how == "watchdog":
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(poll_s)
            os.kill(os.getpid(), sig)

        threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request above took effect
        os.kill(os.getpid(), sig)
    return how


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.exit("usage: python -m alignment_pipeline.training.guard MODULE [ARGS...]")
    die_with_parent()
    module, sys.argv = argv[0], argv
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
