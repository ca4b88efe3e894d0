"""Start a server as a real process on a free loopback port, wait until it answers, and stop it
cleanly (SIGTERM, then SIGKILL of its whole process group if it does not exit in time), so that
tests, notebooks and benchmarks leave no stray process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ManagedServer", "free_port", "gateway_command"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def gateway_command(port: int, *args: str, host: str = "127.0.0.1") -> list[str]:
    """The command that starts the course's gateway (``python -m course_utils.serving.api``)."""
    return [sys.executable, "-m", "course_utils.serving.api", "--host", host, "--port", str(port), *args]


def _die_with_parent():
    """On Linux, when called from the main thread: a function for ``Popen(preexec_fn=...)`` that asks the
    kernel to SIGTERM the child when this process dies, so a killed notebook kernel or test run leaves
    no server behind (``stop()`` is the normal path). ``PR_SET_PDEATHSIG`` fires when the *thread*
    that forked exits, hence main thread only; elsewhere ``None``."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return arm


class ManagedServer:
    """A server process, used as a context manager::

        with ManagedServer(gateway_command(port), f"http://127.0.0.1:{port}") as server:
            ...  # server.url answers; server.log_text() shows its output

    Args:
        command: the process to start (in its own process group).
        url: its base URL; ``url + ready_path`` must answer 200 once it is ready.
        startup_timeout: seconds to wait for readiness (the process dying first is reported with its log).
        stop_timeout: seconds between SIGTERM and SIGKILL.
        env: extra environment variables.
        log_path: where its output goes; by default a temporary file, removed by ``stop()`` (its text stays
            readable through ``log_text()``) and kept when the ``with`` block ends with an error, to be read.
    """

    def __init__(self, command: Sequence[str], url: str, *, ready_path: str = "/health", startup_timeout: float = 180,
                 stop_timeout: float = 30, env: dict[str, str] | None = None, log_path: str | Path | None = None) -> None:
        self.command = list(command)
        self.url = url.rstrip("/")
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.env = {**os.environ, **(env or {})}
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="llm-course-server-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._stopped_log: str | None = None  # the text of our own log once stop() removed the file

    def log_text(self) -> str:
        if self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return self._stopped_log or ""

    def start(self) -> ManagedServer:
        import httpx

        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True, preexec_fn=_die_with_parent())
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with code {self.process.returncode} before it was ready; "
                                   f"its log ({self.log_path}):\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > self.startup_timeout:
                self.stop()
                raise TimeoutError(f"server not ready after {self.startup_timeout} s; log:\n{self.log_text()[-4000:]}")
            time.sleep(0.25)
        self.startup_seconds = time.perf_counter() - t0
        return self

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, *, keep_log: bool = False) -> int | None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL the process group. Returns the exit code.

        Our own temporary log is then read into memory (``log_text()`` still answers) and removed, unless
        ``keep_log``."""
        if self.process is None:
            return None
        self.terminate()
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        try:  # anything the server started (vLLM's engine core) goes too
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        if self._own_log and not keep_log and self.log_path.exists():
            self._stopped_log = self.log_text()
            self.log_path.unlink()
        return self.process.returncode

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.stop(keep_log=exc_type is not None)
