"""An asyncio load generator for OpenAI-compatible servers (the course gateway or vLLM).

Each simulated user is a coroutine that holds a multi-turn chat: it sends the conversation so far
with ``stream=True``, reads the Server-Sent Events, appends the assistant's answer and asks the
next question. Per request it records, on the client's clock:

* TTFT: request sent → first chunk carrying text;
* TPOT: (last text chunk − first text chunk) / (completion tokens − 1), tokens from ``usage``;
* end-to-end latency, the HTTP status, and how many final answers arrived (exactly one is correct).

Requests answered 429 (rate limited) are recorded and the user moves on to its next turn.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from course_utils import checks

__all__ = ["RequestRecord", "run_chat_users", "run_completions", "summarize_records"]

QUESTIONS = [
    "What is a Python list comprehension?", "Give an example of one.", "How is it different from a loop?",
    "What does the `with` statement do?", "Name a context manager in the standard library.",
    "What is a generator?", "How do I read a file line by line?", "What does `yield` return?",
]


@dataclass
class RequestRecord:
    user: int
    turn: int
    status: int
    start: float
    ttft: float = float("nan")
    tpot: float = float("nan")
    e2e: float = float("nan")
    output_tokens: int = 0
    answers: int = 0  # final chunks with a finish_reason (must be exactly 1 for a 200)
    error: str = ""


async def _stream(client, url: str, body: dict, headers: dict, record: RequestRecord) -> str:
    """POST a streaming request, fill ``record``, return the generated text."""
    t0 = time.perf_counter()
    first = last = None
    text = []
    async with client.stream("POST", url, json=body, headers=headers) as response:
        record.status = response.status_code
        if response.status_code != 200:
            record.error = (await response.aread()).decode(errors="replace")[:300]
            record.e2e = time.perf_counter() - t0
            return ""
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                record.error = json.dumps(chunk["error"])[:300]
                continue
            if chunk.get("usage"):
                record.output_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                piece = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text.append(piece)
                if choice.get("finish_reason"):
                    record.answers += 1
    end = time.perf_counter()
    record.e2e = end - t0
    if first is not None:
        record.ttft = first - t0
        if record.output_tokens > 1:
            record.tpot = (last - first) / (record.output_tokens - 1)
    return "".join(text)


async def run_chat_users(base_url: str, users: int, turns: int, *, model: str, api_key: str | None = None,
                         max_tokens: int = 32, think_time: float = 0.0, timeout: float = 600.0) -> tuple[list[RequestRecord], float]:
    """``users`` concurrent multi-turn streaming chats of ``turns`` turns each.

    Returns the records of every request and the wall time of the whole run.
    """
    import httpx

    checks.positive_int(users=users, turns=turns, max_tokens=max_tokens)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/v1/chat/completions"
    records: list[RequestRecord] = []

    async def user(u: int, client) -> None:
        messages = [{"role": "system", "content": "You are a concise Python tutor."}]
        for turn in range(turns):
            messages.append({"role": "user", "content": QUESTIONS[(u + turn) % len(QUESTIONS)]})
            record = RequestRecord(user=u, turn=turn, status=0, start=time.perf_counter())
            records.append(record)
            body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                    "stream": True, "stream_options": {"include_usage": True}}
            try:
                answer = await _stream(client, url, body, headers, record)
            except httpx.HTTPError as err:
                record.error = f"{type(err).__name__}: {err}"
                answer = ""
            if record.status == 200:
                messages.append({"role": "assistant", "content": answer})
            else:
                messages.pop()
            if think_time:
                await asyncio.sleep(think_time)

    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(user(u, client) for u in range(users)))
        wall = time.perf_counter() - start
    return records, wall


async def run_completions(base_url: str, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int], *, model: str,
                          concurrency: int, api_key: str | None = None, timeout: float = 900.0) -> tuple[list[RequestRecord], float]:
    """Send every prompt (token ids) to ``/v1/completions`` (greedy, ``ignore_eos``, streaming),
    at most ``concurrency`` at a time. Returns the records and the wall time."""
    import httpx

    checks.positive_int(concurrency=concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/v1/completions"
    gate = asyncio.Semaphore(concurrency)
    records: list[RequestRecord] = []

    async def one(i: int, client) -> None:
        async with gate:
            record = RequestRecord(user=i, turn=0, status=0, start=time.perf_counter())
            records.append(record)
            body = {"model": model, "prompt": list(prompts[i]), "max_tokens": int(max_tokens[i]), "temperature": 0,
                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            try:
                await _stream(client, url, body, headers, record)
            except httpx.HTTPError as err:
                record.error = f"{type(err).__name__}: {err}"

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, client) for i in range(len(prompts))))
        wall = time.perf_counter() - start
    return records, wall


def summarize_records(records: Sequence[RequestRecord], wall: float) -> dict[str, float]:
    """p50/p95 TTFT, TPOT, end-to-end over the successful requests; counts of each status; errors;
    requests not answered exactly once; output tokens per second."""
    from course_utils.serving.metrics import latency_summary

    ok = [r for r in records if r.status == 200 and not r.error]
    out = latency_summary([asdict(r) for r in ok], wall)
    out["requests"] = len(records)
    out["ok"] = len(ok)
    out["rate_limited"] = sum(r.status == 429 for r in records)
    out["errors"] = sum(r.status != 429 and (r.status != 200 or bool(r.error)) for r in records)
    out["not_answered_once"] = sum(r.answers != 1 for r in ok)
    return out
