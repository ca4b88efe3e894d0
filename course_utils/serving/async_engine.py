"""Drive an :class:`~course_utils.serving.engine.LLMEngine` from asyncio: the engine steps in one
background thread; each request streams its tokens to its own ``asyncio.Queue``.

Adds and aborts are queued as commands that the engine thread applies **between** two steps, so
the event loop never waits for a forward pass; an abort (client gone, timeout) frees the
request's KV blocks before the next step runs.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from course_utils.serving.engine import LLMEngine
from course_utils.serving.scheduler import SamplingParams

__all__ = ["AsyncEngine", "TokenEvent"]


@dataclass
class TokenEvent:
    """New tokens of one request; ``finish_reason`` is set on its last event."""

    token_ids: list[int]
    finish_reason: str | None = None
    error: BaseException | None = None


class AsyncEngine:
    """An engine thread plus per-request queues. Use ``start()``/``stop()`` (or ``async with``)."""

    def __init__(self, engine: LLMEngine) -> None:
        if not isinstance(engine, LLMEngine):
            raise TypeError(f"engine must be an LLMEngine, got {type(engine).__name__}")
        self.engine = engine
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def __aenter__(self) -> AsyncEngine:
        self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop()

    # the engine thread --------------------------------------------------------------------
    def _deliver(self, request_id: str, event: TokenEvent) -> None:
        target = self._streams.get(request_id)
        if target is None:
            return
        loop, q = target
        try:
            loop.call_soon_threadsafe(q.put_nowait, event)
        except RuntimeError:  # the event loop is closed
            pass
        if event.finish_reason is not None or event.error is not None:
            self._streams.pop(request_id, None)

    def _apply_commands(self) -> None:
        while True:
            try:
                kind, request_id, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                try:
                    self.engine.add_request(payload[0], payload[1], request_id=request_id)
                except (ValueError, TypeError) as err:
                    self._deliver(request_id, TokenEvent([], error=err))
            else:
                self.engine.abort(request_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._apply_commands()
            if not self.engine.has_unfinished:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as err:  # noqa: BLE001 - report to every waiting client, keep serving
                for request_id in list(self._streams):
                    self.engine.abort(request_id)
                    self._deliver(request_id, TokenEvent([], error=err))
                continue
            for out in outputs:
                reason = out.request.finish_reason if out.finished else None
                self._deliver(out.request_id, TokenEvent(out.new_token_ids, reason))

    # the asyncio side ---------------------------------------------------------------------
    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str) -> AsyncIterator[TokenEvent]:
        """Yield the request's token events until it finishes. If the consumer stops early
        (cancelled, closed, timed out) the request is aborted and its blocks are freed."""
        if self._thread is None:
            raise RuntimeError("AsyncEngine.start() was not called")
        q: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), q)
        self._commands.put(("add", request_id, (list(prompt_ids), params)))
        self._wake.set()
        finished = False
        try:
            while True:
                event = await q.get()
                if event.error is not None:
                    finished = True
                    raise event.error
                yield event
                if event.finish_reason is not None:
                    finished = True
                    return
        finally:
            if not finished:
                self._streams.pop(request_id, None)
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Cancel a request; its blocks are freed before the engine's next step."""
        self._commands.put(("abort", request_id, None))
        self._wake.set()

    def stats(self) -> dict[str, float]:
        """Running and waiting requests and the fraction of KV blocks in use (read without locking)."""
        sched, alloc = self.engine.scheduler, self.engine.allocator
        return {"running": len(sched.running), "waiting": len(sched.waiting),
                "kv_usage": alloc.num_used / alloc.num_blocks}
