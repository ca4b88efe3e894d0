"""An OpenAI-compatible HTTP gateway (FastAPI + uvicorn) in front of the course's engine or a vLLM
server.

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (streaming as Server-Sent
Events in OpenAI's chunk format, ending with ``data: [DONE]``, or one JSON answer),
``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text format).

What a production gateway adds around the model, each answered in OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}``:

* **validation** (400): empty ``messages``, an unknown role, ``temperature`` outside [0, 2],
  ``top_p`` outside (0, 1], ``max_tokens`` < 1, a prompt longer than the context (the message
  names both lengths); an unknown model (404); a body that is not JSON (422) or too large (413);
* **API keys** (401) and **per-key rate limits** (429 with ``Retry-After``; the ``limits``
  library's moving window);
* a **concurrency cap**: at most ``max_concurrency`` requests generate at once, up to
  ``max_queue`` more wait for a slot (503 beyond that);
* a **request timeout** (504, or an error event in a stream), and a **client disconnect** that
  cancels the generation and frees its KV blocks;
* **graceful shutdown**: on SIGTERM uvicorn stops accepting connections and lets the requests
  in flight finish (``timeout_graceful_shutdown``) before the engine stops.

Run it with ``llm-course serve`` (or ``python -m course_utils.serving.api``); the flags that also
exist in vLLM's server have vLLM's names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from course_utils.serving.scheduler import SamplingParams

__all__ = ["CourseBackend", "Delta", "GatewaySettings", "VLLMBackend", "create_app", "main"]


# ------------------------------------------------------------------------------ schemas ----
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens tokens whatever the model says


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[int] = Field(min_length=1)


# ------------------------------------------------------------------------------ backends ---
@dataclass
class Delta:
    """A piece of generated text; ``finish_reason`` on the last one, token counts when known."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None


class CourseBackend:
    """The course's :class:`~course_utils.serving.engine.LLMEngine`, driven by an
    :class:`~course_utils.serving.async_engine.AsyncEngine` thread."""

    kind = "course"

    def __init__(self, engine, tokenizer) -> None:
        from course_utils.serving.async_engine import AsyncEngine

        self.engine = engine
        self.tokenizer = tokenizer
        self.async_engine = AsyncEngine(engine)
        self.max_model_len = engine.config.max_model_len

    async def start(self) -> None:
        self.async_engine.start()

    async def close(self) -> None:
        self.async_engine.stop()

    async def healthy(self) -> bool:
        return self.async_engine.is_running

    def stats(self) -> dict[str, float]:
        return self.async_engine.stats()

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> AsyncIterator[Delta]:
        """Detokenize incrementally: emit the new suffix of the decoded text, holding back an
        incomplete UTF-8 character (decoded as U+FFFD) until its next byte arrives."""
        ids: list[int] = []
        sent = ""
        async for event in self.async_engine.generate(prompt_ids, params, request_id):
            ids.extend(event.token_ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if event.finish_reason is None and text.endswith("\ufffd"):
                continue
            delta, sent = text[len(sent):], text
            if delta or event.finish_reason is not None:
                yield Delta(delta, event.finish_reason, len(ids))


class VLLMBackend:
    """A running vLLM OpenAI server: prompts are templated and tokenized here (the same way as
    for the course engine) and sent as token ids to its ``/v1/completions``. With ``server`` (a
    :class:`~course_utils.serving.vllm_server.VLLMServer` the gateway started) it is stopped when
    the gateway shuts down."""

    kind = "vllm"

    def __init__(self, base_url: str, model_name: str, max_model_len: int, api_key: str | None = None,
                 server=None) -> None:
        import httpx

        self.server = server
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.max_model_len = max_model_len
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(None, connect=5))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.client.aclose()
        if self.server is not None:  # uvicorn re-raises SIGTERM after the lifespan: stop vLLM here
            await asyncio.to_thread(self.server.stop)

    async def healthy(self) -> bool:
        try:
            return (await self.client.get("/health")).status_code == 200
        except Exception:  # noqa: BLE001 - unreachable means unhealthy
            return False

    def stats(self) -> dict[str, float]:
        return {}

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> AsyncIterator[Delta]:
        body = {"model": self.model_name, "prompt": prompt_ids, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "stream": True,
                "stream_options": {"include_usage": True}, "skip_special_tokens": True,
                "ignore_eos": params.ignore_eos}
        if params.seed is not None:
            body["seed"] = params.seed
        async with self.client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"vLLM answered {response.status_code}: {(await response.aread())[:500]!r}")
            pending: Delta | None = None
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage") and not chunk.get("choices"):
                    if pending is not None:
                        pending.completion_tokens = chunk["usage"]["completion_tokens"]
                    continue
                choice = chunk["choices"][0]
                if pending is not None:
                    yield pending
                pending = Delta(choice.get("text", ""), choice.get("finish_reason"))
            if pending is not None:
                yield pending


# ------------------------------------------------------------------------------ errors ----
class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, headers=self.headers, content={"error": {
            "message": self.message, "type": self.type, "param": self.param, "code": self.code}})


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return APIError(422, "We could not parse the JSON body of your request.", code="invalid_json").response()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    # for a value outside a literal (an unknown role), name the allowed values
    message = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request")
    if first.get("type") == "literal_error":
        message += f" (got {first.get('input')!r})"
    return APIError(400, message, param=param, code="invalid_value").response()


# ------------------------------------------------------------------------------ the app ----
@dataclass
class GatewaySettings:
    """Everything the gateway enforces; ``api_keys`` empty means no authentication."""

    served_model_name: str = "smollm2-135m-instruct"
    api_keys: tuple[str, ...] = ()
    rate_limit: str | None = None  # e.g. "60/minute" per API key (per client address without keys)
    max_concurrency: int = 32
    max_queue: int = 256
    request_timeout: float = 120.0
    max_body_bytes: int = 1_000_000
    default_max_tokens: int = 256
    extra_model_names: tuple[str, ...] = field(default_factory=tuple)


class _BodyLimit:
    """ASGI middleware: 413 for a body larger than ``max_bytes`` (by Content-Length, or counted)."""

    class TooLarge(Exception):
        pass

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = APIError(413, f"Request body too large: the limit is {self.max_bytes} bytes.", code="body_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await error.response()(scope, receive, send)
        seen, started = 0, False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyLimit.TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyLimit.TooLarge:
            if not started:
                await error.response()(scope, receive, send)


def create_app(backend, tokenizer, settings: GatewaySettings | None = None) -> FastAPI:
    """The FastAPI app serving ``backend`` (a :class:`CourseBackend` or :class:`VLLMBackend`);
    ``tokenizer`` renders chat templates and counts prompt tokens."""
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    settings = settings or GatewaySettings()
    models = (settings.served_model_name, *settings.extra_model_names)
    limiter = MovingWindowRateLimiter(MemoryStorage())
    limit = parse(settings.rate_limit) if settings.rate_limit else None
    slots = asyncio.Semaphore(settings.max_concurrency)
    state = {"queued": 0, "in_flight": 0, "draining": False}

    registry = CollectorRegistry()
    requests_total = Counter("llm_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"],
                             registry=registry)
    ttft_hist = Histogram("llm_time_to_first_token_seconds", "Time to first token", registry=registry,
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
    tpot_hist = Histogram("llm_time_per_output_token_seconds", "Time per output token after the first",
                          registry=registry, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2))
    e2e_hist = Histogram("llm_e2e_request_latency_seconds", "End-to-end request latency", registry=registry,
                         buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120))
    tokens_total = Counter("llm_generation_tokens", "Generated tokens", registry=registry)
    prompt_tokens_total = Counter("llm_prompt_tokens", "Prompt tokens", registry=registry)
    in_flight = Gauge("llm_requests_in_flight", "Requests generating now", registry=registry)
    queued = Gauge("llm_requests_queued", "Requests waiting for a concurrency slot", registry=registry)
    engine_running = Gauge("llm_engine_running", "Sequences in the engine's running batch", registry=registry)
    engine_waiting = Gauge("llm_engine_waiting", "Sequences waiting in the engine", registry=registry)
    kv_usage = Gauge("llm_kv_cache_usage_ratio", "Fraction of KV blocks in use", registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await backend.start()
        try:
            yield
        finally:
            state["draining"] = True
            await backend.close()

    app = FastAPI(title="LLM course gateway", lifespan=lifespan)
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        requests_total.labels(request.url.path, str(exc.status)).inc()
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        response = _validation_error(exc)
        requests_total.labels(request.url.path, str(response.status_code)).inc()
        return response

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return APIError(exc.status_code, str(exc.detail), code=None).response()

    # dependencies: authentication, then the rate limit -----------------------------------
    def authenticate(request: Request) -> str:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if settings.api_keys and key not in settings.api_keys:
            raise APIError(401, "Incorrect API key provided." if key else
                           "You didn't provide an API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
        return key or (request.client.host if request.client else "anonymous")

    def rate_limited(identity: str = Depends(authenticate)) -> str:
        if limit is not None and not limiter.hit(limit, identity):
            reset = limiter.get_window_stats(limit, identity).reset_time
            retry = max(1, math.ceil(reset - time.time()))
            raise APIError(429, f"Rate limit reached: {settings.rate_limit} per key. Retry in {retry} s.",
                           type_="requests", code="rate_limit_exceeded", headers={"Retry-After": str(retry)})
        return identity

    # helpers ------------------------------------------------------------------------------
    def check_model(name: str) -> None:
        if name not in models:
            raise APIError(404, f"The model `{name}` does not exist. Available: {', '.join(models)}.",
                           param="model", code="model_not_found")

    def sampling(body: _Sampling, prompt_len: int, max_tokens: int | None, what: str) -> SamplingParams:
        room = backend.max_model_len - prompt_len
        if max_tokens is not None and prompt_len + max_tokens > backend.max_model_len:
            raise APIError(400, f"This model's maximum context length is {backend.max_model_len} tokens. However, "
                           f"you requested {prompt_len + max_tokens} tokens ({prompt_len} in the {what}, "
                           f"{max_tokens} in the completion). Please reduce the length of the {what} or completion.",
                           param=what, code="context_length_exceeded")
        if room < 1:
            raise APIError(400, f"This model's maximum context length is {backend.max_model_len} tokens. However, "
                           f"your {what} resulted in {prompt_len} tokens. Please reduce the length of the {what}.",
                           param=what, code="context_length_exceeded")
        return SamplingParams(max_tokens=max_tokens or min(settings.default_max_tokens, room),
                              temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                              ignore_eos=body.ignore_eos)

    async def acquire_slot() -> None:
        if state["queued"] >= settings.max_queue:
            raise APIError(503, "The server is overloaded: too many requests waiting. Retry later.",
                           type_="server_error", code="overloaded", headers={"Retry-After": "1"})
        state["queued"] += 1
        queued.inc()
        try:
            await asyncio.wait_for(slots.acquire(), timeout=settings.request_timeout)
        except asyncio.TimeoutError as err:
            raise APIError(504, f"Timed out after {settings.request_timeout} s waiting for a free slot.",
                           type_="timeout", code="request_timeout") from err
        finally:
            state["queued"] -= 1
            queued.dec()
        state["in_flight"] += 1
        in_flight.inc()

    def release_slot() -> None:
        state["in_flight"] -= 1
        in_flight.dec()
        slots.release()

    async def run(endpoint: str, request: Request, body: _Sampling, prompt_ids: list[int], params: SamplingParams,
                  kind: str):
        """Generate for one request: stream SSE chunks, or collect one JSON answer."""
        created = int(time.time())
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        prompt_tokens_total.inc(len(prompt_ids))
        await acquire_slot()
        started = time.perf_counter()
        deadline = started + settings.request_timeout

        async def deltas() -> AsyncIterator[Delta]:
            """The backend's deltas with stop strings applied, the deadline enforced and the
            latency metrics observed; closing it cancels the generation."""
            text, first, count, last = "", None, 0, started
            gen = backend.generate(prompt_ids, params, rid)
            try:
                while True:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    try:
                        delta = await asyncio.wait_for(gen.__anext__(), timeout=remaining)
                    except StopAsyncIteration:
                        return
                    now = time.perf_counter()
                    if first is None:
                        first = now
                        ttft_hist.observe(now - started)
                    last = now
                    count = delta.completion_tokens if delta.completion_tokens is not None else count + 1
                    piece = delta.text
                    hit = next((s for s in stops if s and s in text + piece), None)
                    if hit is not None:
                        cut = (text + piece).index(hit)
                        piece = (text + piece)[len(text):cut] if cut >= len(text) else ""
                        yield Delta(piece, "stop", count)
                        return
                    text += piece
                    yield Delta(piece, delta.finish_reason, count)
                    if delta.finish_reason is not None:
                        return
            finally:
                await gen.aclose()
                tokens_total.inc(count)
                if first is not None:
                    e2e_hist.observe(last - started)
                    if count > 1:
                        tpot_hist.observe((last - first) / (count - 1))

        def chunk(content: dict | None, finish: str | None, usage: dict | None = None) -> str:
            if kind == "chat":
                choices = [] if content is None else [{"index": 0, "delta": content, "logprobs": None,
                                                       "finish_reason": finish}]
                obj = "chat.completion.chunk"
            else:
                choices = [] if content is None else [{"index": 0, "text": content.get("content", ""),
                                                       "logprobs": None, "finish_reason": finish}]
                obj = "text_completion"
            payload = {"id": rid, "object": obj, "created": created, "model": body.model, "choices": choices}
            if usage is not None:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        def usage(n: int) -> dict:
            return {"prompt_tokens": len(prompt_ids), "completion_tokens": n, "total_tokens": len(prompt_ids) + n}

        if body.stream:
            async def sse():
                n, status = 0, "200"
                try:
                    if kind == "chat":
                        yield chunk({"role": "assistant", "content": ""}, None)
                    async for d in deltas():
                        n = d.completion_tokens or n
                        if d.text:
                            yield chunk({"content": d.text}, None)
                        if d.finish_reason is not None:
                            yield chunk({}, d.finish_reason)
                    if body.stream_options and body.stream_options.include_usage:
                        yield chunk(None, None, usage(n))
                except asyncio.TimeoutError:
                    status = "504"
                    err = APIError(504, f"Generation timed out after {settings.request_timeout} s.",
                                   type_="timeout", code="request_timeout")
                    yield f"data: {json.dumps({'error': {'message': err.message, 'type': err.type, 'code': err.code}})}\n\n"
                except (asyncio.CancelledError, GeneratorExit):
                    status = "499"  # the client went away; deltas() aborted the generation
                    raise
                finally:
                    release_slot()
                    requests_total.labels(endpoint, status).inc()
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        async def collect() -> tuple[str, str | None, int]:
            parts, reason, n = [], None, 0
            async for d in deltas():
                parts.append(d.text)
                reason = d.finish_reason or reason
                n = d.completion_tokens or n
            return "".join(parts), reason, n

        async def watch_disconnect():
            while not await request.is_disconnected():
                await asyncio.sleep(0.1)

        task = asyncio.ensure_future(collect())
        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:  # the client disconnected: cancel the generation
                task.cancel()
                requests_total.labels(endpoint, "499").inc()
                return JSONResponse(status_code=499, content={"error": {"message": "client closed the request"}})
            try:
                text, reason, n = task.result()
            except asyncio.TimeoutError as err:
                raise APIError(504, f"Generation timed out after {settings.request_timeout} s.", type_="timeout",
                               code="request_timeout") from err
        finally:
            watcher.cancel()
            release_slot()
        requests_total.labels(endpoint, "200").inc()
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": reason}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
            obj = "text_completion"
        return {"id": rid, "object": obj, "created": created, "model": body.model, "choices": [choice],
                "usage": usage(n)}

    # routes -------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request, _: str = Depends(rate_limited)):
        check_model(body.model)
        messages = [m.model_dump() for m in body.messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        params = sampling(body, len(prompt_ids), body.max_completion_tokens or body.max_tokens, "messages")
        return await run("/v1/chat/completions", request, body, prompt_ids, params, "chat")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request, _: str = Depends(rate_limited)):
        check_model(body.model)
        prompt_ids = list(body.prompt) if isinstance(body.prompt, list) else tokenizer(body.prompt)["input_ids"]
        if not prompt_ids:
            raise APIError(400, "prompt is empty after tokenization", param="prompt", code="invalid_value")
        params = sampling(body, len(prompt_ids), body.max_tokens, "prompt")
        return await run("/v1/completions", request, body, prompt_ids, params, "completion")

    @app.get("/v1/models")
    async def list_models(_: str = Depends(authenticate)):
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "llm-course",
                                             "max_model_len": backend.max_model_len} for m in models]}

    @app.get("/health")
    async def health():
        ok = await backend.healthy() and not state["draining"]
        return JSONResponse(status_code=200 if ok else 503, content={
            "status": "ok" if ok else "unavailable", "backend": backend.kind, "in_flight": state["in_flight"],
            "queued": state["queued"]})

    @app.get("/metrics")
    async def metrics():
        stats = backend.stats()
        if stats:
            engine_running.set(stats["running"])
            engine_waiting.set(stats["waiting"])
            kv_usage.set(stats["kv_usage"])
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    app.state.settings = settings
    app.state.backend = backend
    return app


# ------------------------------------------------------------------------------ command ----
def build_parser(prog: str = "python -m course_utils.serving.api") -> argparse.ArgumentParser:
    from course_utils.serving.cli_args import add_serve_arguments

    parser = argparse.ArgumentParser(prog=prog, description="OpenAI-compatible server: the course engine or vLLM")
    add_serve_arguments(parser)
    return parser


def _course_backend(args):
    import torch

    from course_utils.models import load_causal_lm
    from course_utils.serving.engine import EngineConfig, LLMEngine

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model, tokenizer = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
    num_blocks = args.num_blocks or max(64, args.max_num_seqs * args.max_model_len // args.block_size // 4)
    num_blocks = max(num_blocks, -(-args.max_model_len // args.block_size))
    config = EngineConfig(num_blocks=num_blocks, block_size=args.block_size, max_num_seqs=args.max_num_seqs,
                          max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
                          enable_prefix_caching=args.enable_prefix_caching)
    return CourseBackend(LLMEngine(model, tokenizer, config), tokenizer), tokenizer


def main(argv: list[str] | None = None) -> int:
    """Start the gateway (and, with ``--engine vllm``, a vLLM server behind it) until SIGTERM/Ctrl-C."""
    import signal
    import sys

    import uvicorn

    args = build_parser().parse_args(argv)
    name = args.served_model_name or args.model
    settings = GatewaySettings(served_model_name=name, api_keys=tuple(args.api_key or ()),
                               rate_limit=args.rate_limit, max_concurrency=args.max_concurrency,
                               max_queue=args.max_queue, request_timeout=args.request_timeout,
                               max_body_bytes=args.max_body_bytes)
    server = None
    # SIGTERM before uvicorn takes the signal over (e.g. while vLLM starts) still runs the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        if args.engine == "course":
            backend, tokenizer = _course_backend(args)
        else:
            from transformers import AutoTokenizer

            from course_utils.serving.vllm_server import VLLMServer, model_folder

            folder = model_folder(args.model)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            url = args.vllm_url
            if url is None:
                server = VLLMServer(folder, served_model_name=name, max_model_len=args.max_model_len,
                                    enable_prefix_caching=args.enable_prefix_caching)
                server.start()
                url = server.url
            backend = VLLMBackend(url, name, args.max_model_len, server=server)
        app = create_app(backend, tokenizer, settings)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                timeout_graceful_shutdown=args.timeout_graceful_shutdown, access_log=False)
        print(f"Serving {name} ({args.engine} engine) at http://{args.host}:{args.port}/v1", flush=True)
        uvicorn.Server(config).run()
    finally:  # also when uvicorn could not start (the lifespan, which normally stops vLLM, never ran)
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
