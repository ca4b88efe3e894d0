"""The flags of ``llm-course serve`` (kept apart from the server so the CLI parses them without
importing FastAPI). Flags that vLLM's server also has carry vLLM's names and meanings:
``--host --port --api-key --max-model-len --served-model-name --max-num-seqs
--max-num-batched-tokens --block-size --enable-prefix-caching --dtype``."""

from __future__ import annotations

import argparse


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Add the server's flags to ``p``."""
    p.add_argument("--engine", choices=("course", "vllm"), default="course",
                   help="course: the from-scratch engine in this process; vllm: start vLLM (or use --vllm-url)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="offline model name, local folder or hub id")
    p.add_argument("--served-model-name", default=None, help="the name clients send as 'model' (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=None, help="accepted API key (repeat for several)")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--max-num-batched-tokens", type=int, default=256)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--num-blocks", type=int, default=None, help="KV blocks (default: max_num_seqs × max_model_len / 4 tokens' worth)")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dtype", default=None, help="float32 (default on CPU), bfloat16, float16")
    p.add_argument("--device", default="auto")
    p.add_argument("--rate-limit", default=None, help="per API key, e.g. '60/minute' (the limits library's syntax)")
    p.add_argument("--max-concurrency", type=int, default=32, help="requests generating at once")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting for a slot before 503")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request, queueing included")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--timeout-graceful-shutdown", type=float, default=30.0,
                   help="seconds requests in flight may take to finish after SIGTERM")
    p.add_argument("--vllm-url", default=None, help="with --engine vllm: use this running vLLM server")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--log-level", default="warning")
