"""Benchmark the course's serving engine; prints every number in one run, as ratios.

Workload: ≥ 64 requests, prompts of 16–128 tokens (``--prompt-len``) from the Python docs, long-tailed output lengths
(lognormal, median 16, clipped to 4–128), greedy with ``ignore_eos`` so every system generates
exactly the same tokens.

* continuous batching (paged KV, chunked prefill) vs transformers ``generate`` one request at a
  time (target ≥ 4×) and vs static padded batches of 16 (target ≥ 2×);
* prefix caching: median time to first token of chats sharing a 300-token system prompt, with the
  cache vs without (target ≥ 2×);
* with ``--vllm`` (needs ``bash install.sh --with-vllm``): the course gateway and a real vLLM
  server on the same workload through the same HTTP client at 16 concurrent requests, as a ratio
  (not gated: vLLM has fused CPU kernels).

Usage: ``python scripts/bench_serving.py [--requests 64] [--threads 2] [--vllm] [--out results/serving/bench_serving.json]``.
Timings on a shared machine are noisy; the ratios are what the chapter relies on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path


def prefix_ttft(model, tokenizer, conversations, *, enable_prefix_caching: bool) -> list[float]:
    """TTFT of each conversation sent alone (one at a time), after one warm-up request."""
    from course_utils.serving import LLMEngine, SamplingParams

    engine = LLMEngine(model, tokenizer, num_blocks=256, block_size=16, max_num_batched_tokens=512,
                       enable_prefix_caching=enable_prefix_caching)
    engine.generate(conversations[:1], SamplingParams(max_tokens=1))  # warm-up (fills the cache when enabled)
    ttfts = []
    for conv in conversations[1:]:
        r = engine.generate([conv], SamplingParams(max_tokens=1))[0]
        ttfts.append(r.first_token_time - r.arrival_time)
    return ttfts


def served_throughput(url: str, workload, model_name: str, concurrency: int) -> dict:
    from course_utils.serving.loadgen import run_completions, summarize_records

    records, wall = asyncio.run(run_completions(url, [w.prompt_ids for w in workload], [w.max_tokens for w in workload],
                                                model=model_name, concurrency=concurrency))
    return summarize_records(records, wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--hf-requests", type=int, default=None,
                    help="time HF one-at-a-time on only the first N requests (throughput is per token)")
    ap.add_argument("--prompt-len", type=int, nargs=2, default=[16, 128], metavar=("MIN", "MAX"),
                    help="prompt lengths, uniform (on a CPU prefill is compute-bound and costs every system the same)")
    ap.add_argument("--batch-size", type=int, default=16, help="static batching's batch size")
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vllm", action="store_true", help="also compare with a real vLLM server (its venv must exist)")
    ap.add_argument("--vllm-concurrency", type=int, default=16)
    ap.add_argument("--only-served", action="store_true",
                    help="skip the in-process comparisons: only the course gateway vs vLLM (with --vllm)")
    ap.add_argument("--out", default="results/serving/bench_serving.json")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from course_utils.models import load_causal_lm
    from course_utils.serving.workload import make_workload

    model, tok = load_causal_lm("smollm2-135m-instruct", device="cpu")
    workload = make_workload(tok, args.requests, seed=args.seed, prompt_len=tuple(args.prompt_len))
    outs = [w.max_tokens for w in workload]
    prompts = [len(w.prompt_ids) for w in workload]
    print(f"workload: {len(workload)} requests, prompt tokens {min(prompts)}-{max(prompts)} "
          f"(median {statistics.median(prompts)}), output tokens {min(outs)}-{max(outs)} "
          f"(median {statistics.median(outs)}, mean {statistics.mean(outs):.1f}), torch threads {torch.get_num_threads()}")
    results: dict = {"workload": {"requests": len(workload), "output_tokens": sum(outs),
                                  "output_median": statistics.median(outs), "output_max": max(outs)},
                     "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%d %H:%M")}

    ratios: dict = {}
    if not args.only_served:
        run_in_process(args, model, tok, workload, results, ratios)
    if args.vllm:
        run_served(args, workload, results, ratios)
    results["ratios"] = ratios
    print_table(args, results, ratios)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nsaved {out}")


def run_in_process(args, model, tok, workload, results, ratios) -> None:
    from course_utils.serving import LLMEngine, encode_prompt
    from course_utils.serving.workload import (
        run_engine,
        run_hf_sequential,
        run_hf_static,
        shared_prefix_prompts,
    )

    engine = LLMEngine(model, tok, num_blocks=1024, block_size=16, max_num_seqs=args.max_num_seqs,
                       max_num_batched_tokens=256, max_model_len=2048)
    run_engine(engine, workload[:4])  # warm-up
    results["ours"] = ours = run_engine(engine, workload, progress=True)
    print(f"ours (continuous batching): {ours['throughput_tok_s']:.1f} tok/s in {ours['wall_s']:.1f} s, "
          f"{ours['steps']} steps, KV utilisation paged {ours['kv_util_paged']:.1%} vs contiguous "
          f"max-length {ours['kv_util_contiguous']:.1%}")
    results["hf_static"] = static = run_hf_static(model, workload, args.batch_size, pad_token_id=tok.pad_token_id or 0,
                                                  progress=True)
    print(f"HF static batches of {args.batch_size}: {static['throughput_tok_s']:.1f} tok/s "
          f"({static['wasted_fraction']:.1%} of decoded slots wasted on padding to the batch's longest)")
    hf_work = workload[:args.hf_requests] if args.hf_requests else workload
    results["hf_sequential"] = seq = run_hf_sequential(model, hf_work, progress=True)
    seq["requests"] = len(hf_work)
    print(f"HF one at a time ({len(hf_work)} requests): {seq['throughput_tok_s']:.1f} tok/s")

    conversations = shared_prefix_prompts(tok, system_tokens=300, n=9, seed=args.seed)
    n_prompt = len(encode_prompt(tok, conversations[0]))
    cached = prefix_ttft(model, tok, conversations, enable_prefix_caching=True)
    uncached = prefix_ttft(model, tok, conversations, enable_prefix_caching=False)
    results["prefix_caching"] = {"prompt_tokens": n_prompt, "ttft_cached_median_s": statistics.median(cached),
                                 "ttft_uncached_median_s": statistics.median(uncached)}

    ratios.update({"ours_vs_hf_sequential": ours["throughput_tok_s"] / seq["throughput_tok_s"],
                   "ours_vs_hf_static": ours["throughput_tok_s"] / static["throughput_tok_s"],
                   "prefix_cache_ttft_speedup": statistics.median(uncached) / statistics.median(cached)})


def run_served(args, workload, results, ratios) -> None:
    """The course gateway and a real vLLM server, one after the other, through the same HTTP client."""
    from course_utils.serving.server import ManagedServer, free_port, gateway_command
    from course_utils.serving.vllm_server import VLLMServer, model_folder, vllm_unavailable_reason

    reason = vllm_unavailable_reason()
    if reason:
        print(f"vLLM skipped: {reason}")
        return
    name = "smollm2-135m-instruct"
    port = free_port()
    threads = ["--torch-threads", str(args.threads)] if args.threads else []
    with ManagedServer(gateway_command(port, "--max-num-seqs", str(args.max_num_seqs), *threads),
                       f"http://127.0.0.1:{port}", startup_timeout=300) as gateway:
        served_throughput(gateway.url, workload[:4], name, 4)  # warm-up
        results["ours_served"] = served_throughput(gateway.url, workload, name, args.vllm_concurrency)
    with VLLMServer(model_folder(name), served_model_name=name, max_model_len=2048, startup_timeout=900,
                    log_path=Path(args.out).with_name("vllm_server.log")) as vllm:
        results["vllm_startup_s"] = vllm.startup_seconds
        served_throughput(vllm.url, workload[:4], name, 4)  # warm-up
        results["vllm"] = served_throughput(vllm.url, workload, name, args.vllm_concurrency)
    for key in ("ours_served", "vllm"):
        r = results[key]
        print(f"{key} via HTTP at {args.vllm_concurrency} concurrent: {r['throughput_tok_s']:.1f} tok/s, "
              f"TTFT p50 {r['ttft_p50']:.2f} s, TPOT p50 {r['tpot_p50'] * 1000:.0f} ms, errors {r['errors']}")
    print(f"vLLM started in {results['vllm_startup_s']:.0f} s")
    ratios["ours_vs_vllm_served"] = results["ours_served"]["throughput_tok_s"] / results["vllm"]["throughput_tok_s"]


def print_table(args, results, ratios) -> None:
    print("\n| comparison | ratio | target |\n| --- | --- | --- |")
    if "prefix_caching" in results:
        pc = results["prefix_caching"]
        print(f"| continuous batching vs HF generate one at a time (throughput) | {ratios['ours_vs_hf_sequential']:.2f}× | ≥ 4× |")
        print(f"| continuous batching vs HF static batches of {args.batch_size} (throughput) | "
              f"{ratios['ours_vs_hf_static']:.2f}× | ≥ 2× |")
        print(f"| prefix caching, {pc['prompt_tokens']}-token prompt with a 300-token shared system prompt (TTFT "
              f"{pc['ttft_uncached_median_s'] * 1000:.0f} → {pc['ttft_cached_median_s'] * 1000:.0f} ms) | "
              f"{ratios['prefix_cache_ttft_speedup']:.2f}× | ≥ 2× |")
    if "ours_vs_vllm_served" in ratios:
        print(f"| ours vs vLLM (served, {args.vllm_concurrency} concurrent, throughput) | "
              f"{ratios['ours_vs_vllm_served']:.2f}× | reported (aim ≥ 0.3×) |")


if __name__ == "__main__":
    main()
