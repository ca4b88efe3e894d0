"""Load-test the course's OpenAI-compatible gateway with concurrent multi-turn streaming chat users.

Starts the gateway (course engine) as a real process on a free loopback port, then for 1, 10 and
32 concurrent users (each a multi-turn streaming chat) reports p50/p95 time to first token, time
per output token, end-to-end latency and throughput, checks zero errors and that every request
was answered exactly once, and plots them against concurrency. A second run with a per-key rate
limit shows the excess requests answered 429 while the accepted ones keep their latency.

Usage: ``python scripts/load_test.py [--users 1 10 32] [--turns 3] [--max-tokens 32] [--out results/serving]``.
Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

MODEL = "smollm2-135m-instruct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[1, 10, 32])
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rate-limit", default="12/minute", help="per-key limit of the second run (all users share one key)")
    ap.add_argument("--rate-users", type=int, default=10)
    ap.add_argument("--out", default="results/serving")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils.serving.loadgen import run_chat_users, summarize_records
    from course_utils.serving.server import ManagedServer, free_port, gateway_command

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine_flags = ["--max-num-seqs", str(max(args.users)), "--max-concurrency", str(max(args.users)),
                    "--max-model-len", "1024"]
    rows = []
    port = free_port()
    with ManagedServer(gateway_command(port, *engine_flags), f"http://127.0.0.1:{port}") as server:
        asyncio.run(run_chat_users(server.url, 1, 1, model=MODEL, max_tokens=4))  # warm-up
        for users in args.users:
            records, wall = asyncio.run(run_chat_users(server.url, users, args.turns, model=MODEL,
                                                       max_tokens=args.max_tokens))
            s = summarize_records(records, wall)
            s["users"] = users
            rows.append(s)
            print(f"{users:>3} users: {s['requests']} requests, {s['errors']} errors, {s['not_answered_once']} not "
                  f"answered exactly once, TTFT p50/p95 {s['ttft_p50']:.2f}/{s['ttft_p95']:.2f} s, "
                  f"{s['throughput_tok_s']:.1f} tok/s", flush=True)
    key = "load-test"
    port = free_port()
    with ManagedServer(gateway_command(port, *engine_flags, "--api-key", key, "--rate-limit", args.rate_limit),
                       f"http://127.0.0.1:{port}") as server:
        records, wall = asyncio.run(run_chat_users(server.url, args.rate_users, args.turns, model=MODEL, api_key=key,
                                                   max_tokens=args.max_tokens))
        limited = summarize_records(records, wall)
        limited["users"] = args.rate_users
        limited["retry_after_seen"] = sum(1 for r in records if r.status == 429)

    print("\n| users | requests | errors | answered once | TTFT p50 | TTFT p95 | TPOT p50 | TPOT p95 | e2e p50 | e2e p95 | tok/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in rows:
        print(f"| {s['users']} | {s['requests']} | {s['errors']} | {s['ok'] - s['not_answered_once']}/{s['ok']} | "
              f"{s['ttft_p50']:.2f} s | {s['ttft_p95']:.2f} s | {s['tpot_p50'] * 1000:.0f} ms | "
              f"{s['tpot_p95'] * 1000:.0f} ms | {s['e2e_p50']:.2f} s | {s['e2e_p95']:.2f} s | {s['throughput_tok_s']:.1f} |")
    same = next((s for s in rows if s["users"] == args.rate_users), None)
    print(f"\nrate limit {args.rate_limit} on one key shared by {args.rate_users} users: {limited['requests']} requests, "
          f"{limited['ok']} answered, {limited['rate_limited']} got 429, {limited['errors']} other errors; accepted "
          f"TTFT p50 {limited['ttft_p50']:.2f} s, TPOT p50 {limited['tpot_p50'] * 1000:.0f} ms"
          + (f" (unlimited run with {args.rate_users} users: TTFT p50 {same['ttft_p50']:.2f} s, "
             f"TPOT p50 {same['tpot_p50'] * 1000:.0f} ms)" if same else ""))

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    users = [s["users"] for s in rows]
    for ax, key_, label in zip(axes[:3], ("ttft", "tpot", "e2e"), ("time to first token (s)",
                                                                     "time per output token (s)", "end-to-end (s)")):
        ax.plot(users, [s[f"{key_}_p50"] for s in rows], "o-", label="p50")
        ax.plot(users, [s[f"{key_}_p95"] for s in rows], "s--", label="p95")
        ax.set_xlabel("concurrent users")
        ax.set_title(label)
        ax.legend()
    axes[3].plot(users, [s["throughput_tok_s"] for s in rows], "o-")
    axes[3].set_xlabel("concurrent users")
    axes[3].set_title("throughput (output tok/s)")
    fig.tight_layout()
    fig.savefig(out / "load_test.png", dpi=110)
    (out / "load_test.json").write_text(json.dumps({"runs": rows, "rate_limited": limited,
                                                    "turns": args.turns, "max_tokens": args.max_tokens}, indent=2))
    print(f"\nsaved {out / 'load_test.png'} and {out / 'load_test.json'}")
    bad = sum(s["errors"] + s["not_answered_once"] for s in rows)
    if bad or limited["rate_limited"] == 0:
        raise SystemExit(f"load test failed: {bad} errors or unanswered requests, {limited['rate_limited']} 429s")


if __name__ == "__main__":
    main()
