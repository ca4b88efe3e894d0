"""course_utils.serving.api: the OpenAI-compatible gateway, tested as a real uvicorn process on a
free loopback port (started and stopped by fixtures, no stray process): the official ``openai``
client streaming and not, SSE framing, every validation error in OpenAI's shape, API keys, the
rate limit (429 + Retry-After), the concurrency cap with its queue, the request timeout, a client
disconnect that frees the engine, graceful shutdown, /metrics; and real vLLM when its venv exists."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from course_utils.runtime import torch_threads
from course_utils.serving.server import ManagedServer, free_port, gateway_command

MODEL = "smollm2-135m-instruct"
KEY = "test-key"
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
SMALL = ["--max-model-len", "256", "--num-blocks", "64", "--block-size", "16", "--torch-threads", "1",
         "--log-level", "warning"]


def _start(*args: str) -> ManagedServer:
    port = free_port()
    return ManagedServer(gateway_command(port, *SMALL, *args), f"http://127.0.0.1:{port}", startup_timeout=240).start()


def _stopped_cleanly(srv: ManagedServer, code: int | None) -> bool:
    """uvicorn finishes its graceful shutdown, then re-raises the SIGTERM it caught, which the gateway's own
    handler turns into exit code 143 (128 + SIGTERM) after its cleanup: 0, 143 or -15 is a clean exit."""
    return code in (0, 128 + signal.SIGTERM, -signal.SIGTERM) and "Traceback" not in srv.log_text()


def _port_closed(url: str) -> bool:
    host, port = url.split("//")[1].split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


@pytest.fixture(scope="module")
def server():
    srv = _start("--api-key", KEY)
    yield srv
    assert _stopped_cleanly(srv, srv.stop()), srv.log_text()[-3000:]
    assert _port_closed(srv.url)


@pytest.fixture(scope="module")
def limited():
    """A second server: 3 requests/minute per key, one generation at a time with one queued, 4 s timeout."""
    srv = _start("--api-key", "a", "--api-key", "b", "--api-key", "c", "--rate-limit", "3/minute",
                 "--max-concurrency", "1", "--max-queue", "1", "--request-timeout", "4")
    yield srv
    assert _stopped_cleanly(srv, srv.stop()), srv.log_text()[-3000:]
    assert _port_closed(srv.url)


@pytest.fixture(scope="module")
def reference():
    """The greedy answer from transformers' model.generate in this process."""
    import torch

    from course_utils.models import load_causal_lm
    from course_utils.serving import encode_prompt

    with torch_threads(1):
        model, tok = load_causal_lm(MODEL, device="cpu")
        ids = torch.tensor([encode_prompt(tok, CAPITAL)])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _client(server, key=KEY):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def _post(server, path, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=120, **kw)


# ------------------------------------------------------------------ the OpenAI client ----
def test_openai_client_chat_matches_model_generate_streaming_and_not(server, reference):
    client = _client(server)
    answer = client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=10, temperature=0)
    assert answer.choices[0].message.content == reference and "Paris" in reference
    assert answer.object == "chat.completion" and answer.choices[0].finish_reason == "stop"  # EOS before 10
    n = answer.usage.completion_tokens
    assert 1 <= n <= 10
    chunks = list(client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reference
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == n and chunks[-1].usage.prompt_tokens > 10


def test_openai_client_completions_and_models(server):
    client = _client(server)
    full = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=8, temperature=0)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="def add(a, b):", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert full.choices[0].text == streamed and full.object == "text_completion"
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_sse_framing_and_stop_strings(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": MODEL, "messages": CAPITAL, "max_tokens": 6, "temperature": 0, "stream": True},
                      timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    stopped = _post(server, "/v1/chat/completions", {"model": MODEL, "messages": CAPITAL, "max_tokens": 10,
                                                     "temperature": 0, "stop": ["Paris"]}).json()
    assert "Paris" not in stopped["choices"][0]["message"]["content"]
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_health_and_prometheus_metrics(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    text = httpx.get(server.url + "/metrics").text
    assert 'llm_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert "llm_time_to_first_token_seconds_count" in text and "llm_kv_cache_usage_ratio" in text


# ---------------------------------------------------------------------------- errors ----
@pytest.mark.parametrize("change,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
])
def test_invalid_requests_get_400_in_openai_shape(server, change, param):
    r = _post(server, "/v1/chat/completions", {"model": MODEL, "messages": CAPITAL, **change})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and param.split(".")[0] in error["message"]


def test_prompt_too_long_unknown_model_bad_json_too_large_and_auth(server):
    long = [{"role": "user", "content": "word " * 400}]
    r = _post(server, "/v1/chat/completions", {"model": MODEL, "messages": long})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "256" in r.json()["error"]["message"]  # names the context length ...
    n = int(r.json()["error"]["message"].split("resulted in ")[1].split()[0])
    assert n > 256  # ... and the prompt's
    r = _post(server, "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 300})
    assert r.status_code == 400 and "300 in the completion" in r.json()["error"]["message"]
    r = _post(server, "/v1/chat/completions", {"model": "gpt-9", "messages": CAPITAL})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"
    r = _post(server, "/v1/completions", {"model": MODEL, "prompt": "x" * 1_100_000})
    assert r.status_code == 413 and "error" in r.json()
    for key in (None, "wrong"):
        r = _post(server, "/v1/chat/completions", {"model": MODEL, "messages": CAPITAL}, key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/v1/models").status_code == 401


def test_client_disconnect_cancels_generation_and_frees_blocks(server):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", server.url + "/v1/completions", json=body,
                           headers={"Authorization": f"Bearer {KEY}"}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(4)]
    assert got[0].startswith("data: ")
    deadline = time.time() + 20
    while time.time() < deadline:
        metrics = httpx.get(server.url + "/metrics").text
        if "llm_engine_running 0.0" in metrics and "llm_requests_in_flight 0.0" in metrics \
                and "llm_kv_cache_usage_ratio 0.0" in metrics:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the generation kept running after the client left:\n" + metrics[-2000:])
    assert '"/v1/completions",status="499"' in metrics  # counted as a client that went away


# -------------------------------------------------------------- limits and shutdown ----
def test_rate_limit_429_with_retry_after_per_key(limited):
    ok = {"model": MODEL, "messages": CAPITAL, "max_tokens": 1, "temperature": 0}
    codes = [_post(limited, "/v1/chat/completions", ok, key="a").status_code for _ in range(3)]
    r = _post(limited, "/v1/chat/completions", ok, key="a")
    assert codes == [200, 200, 200] and r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert _post(limited, "/v1/chat/completions", ok, key="b").status_code == 200  # other keys unaffected


def _gauge(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_for_gauge(server, name: str, value: float, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while _gauge(server, name) != value:
        assert time.monotonic() < end, f"{name} never reached {value}"
        time.sleep(0.005)


def test_concurrency_cap_queues_then_rejects_and_timeout(limited):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    results: dict[int, httpx.Response] = {}

    def call(i):
        results[i] = _post(limited, "/v1/completions", body, key="c")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    threads[0].start()  # one generates ...
    _wait_for_gauge(limited, "llm_requests_in_flight", 1)
    threads[1].start()  # ... one waits for the slot ...
    _wait_for_gauge(limited, "llm_requests_queued", 1)
    call(2)  # ... and the third finds the queue full (the server's own gauges say when, not a sleep)
    for t in threads:
        t.join()
    assert [results[i].status_code for i in range(3)] == [200, 200, 503]
    assert results[2].headers["retry-after"] == "1"
    r = _post(limited, "/v1/completions", {**body, "max_tokens": 240}, key="b")  # far more than 4 s of work
    assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"


def test_graceful_shutdown_drains_requests_in_flight():
    srv = _start()
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "ignore_eos": True,
            "stream": True}
    events = []
    try:
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            events.append(next(lines))
            srv.terminate()  # SIGTERM while the stream is in flight
            events += [line for line in lines if line]
        code = srv.process.wait(timeout=60)
    finally:
        srv.stop()
    assert events[-1] == "data: [DONE]" and _stopped_cleanly(srv, code)
    text = "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1] if json.loads(e[6:])["choices"])
    assert len(text) > 10  # all 12 tokens arrived after the signal
    assert _port_closed(srv.url)


def test_cli_serve_takes_vllms_flag_names():
    from course_utils.tooling.cli import build_parser

    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--api-key", "k",
                                      "--max-model-len", "512", "--served-model-name", "m", "--engine", "vllm"])
    assert (args.host, args.port, args.api_key, args.max_model_len, args.served_model_name, args.engine) == \
        ("0.0.0.0", 9000, ["k"], 512, "m", "vllm")


# ------------------------------------------------------------------------- real vLLM ----
def _vllm_server_pids() -> set[int]:
    from pathlib import Path

    pids = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"vllm.entrypoints.openai.api_server" in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            pass
    return pids


def test_real_vllm_answers_through_the_gateway():
    from course_utils.serving.vllm_server import vllm_unavailable_reason

    reason = vllm_unavailable_reason()
    if reason:
        pytest.skip(f"real vLLM not installed: {reason}")
    before = _vllm_server_pids()
    port = free_port()
    srv = ManagedServer(gateway_command(port, "--engine", "vllm", "--max-model-len", "512"),
                        f"http://127.0.0.1:{port}", startup_timeout=400)
    with srv:
        client = _client(srv, key="none")
        answer = client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=10, temperature=0)
        assert "Paris" in answer.choices[0].message.content  # an answer, not only a 200
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=MODEL, messages=CAPITAL, max_tokens=10, temperature=0, stream=True) if c.choices)
        assert "Paris" in streamed
    assert _stopped_cleanly(srv, srv.process.returncode) and _port_closed(srv.url)
    deadline = time.time() + 60
    while _vllm_server_pids() - before and time.time() < deadline:
        time.sleep(1)
    assert not _vllm_server_pids() - before, "the gateway left its vLLM server running"
