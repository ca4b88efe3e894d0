"""A real headless Chromium for tests, driven over the DevTools protocol (CDP).

``with headless_chromium() as browser: browser.open(url); browser.evaluate("document.title")``
starts Debian's ``chromium`` with a fresh profile on a free DevTools port, and stops it (its whole
process group) and removes the profile on exit, whatever happened.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    """The Chromium (or Chrome) executable, or None when none is installed (``apt-get install chromium``)."""
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                None)


class Browser:
    """One page of a running Chromium, driven with CDP ``Runtime.evaluate``."""

    def __init__(self, port: int):
        self.port = port
        self._ws = None
        self._next_id = 0

    def _targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=60) as resp:
            return json.load(resp)

    def _connect(self) -> None:
        import websocket  # websocket-client

        page = next(t for t in self._targets() if t.get("type") == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120, suppress_origin=True)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result (events in between are skipped)."""
        if self._ws is None:
            self._connect()
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"CDP {method} failed: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 120.0) -> None:
        """Navigate to ``url`` and wait until the page and all its images have loaded."""
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self.evaluate("document.readyState === 'complete' && location.href !== 'about:blank' && "
                                  "Array.from(document.images).every(i => i.complete)")
            if ready:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not finish loading in {timeout:.0f} s")

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()


def _devtools_port(path: Path) -> int | None:
    """The port in Chromium's ``DevToolsActivePort`` file (first line), or None until it is written in full."""
    try:
        first, _ = path.read_text().split("\n", 1)
        return int(first)
    except (FileNotFoundError, ValueError):
        return None


@contextlib.contextmanager
def headless_chromium(timeout: float = 180.0) -> Iterator[Browser]:
    """A started headless Chromium (``Browser``), stopped on exit.

    Chromium writes its DevTools port to ``<profile>/DevToolsActivePort`` once it listens; that file is polled
    (a loaded machine can take many seconds), while a thread drains its log so it never blocks on a full pipe.
    """
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium is not installed: apt-get install chromium")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": profile})  # its singleton-socket folder goes with the profile
    log: collections.deque[str] = collections.deque(maxlen=20)
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    browser = None
    try:
        deadline = time.monotonic() + timeout
        while (port := _devtools_port(Path(profile) / "DevToolsActivePort")) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {proc.returncode} before DevTools started; "
                                   f"its last log lines: {list(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium did not start DevTools in {timeout:.0f} s; its last log lines: {list(log)}")
            time.sleep(0.2)
        browser = Browser(port)
        yield browser
    finally:
        if browser is not None:
            browser.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
