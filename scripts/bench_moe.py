"""Benchmark MoE implementations in one process and print tokens/s and ratios.

    python scripts/bench_moe.py                      # 16, 256, 4096 tokens; 8 experts, top-2, 512/1024
    python scripts/bench_moe.py --tokens 16 256 --repeats 3 --threads 1

Compared on the same weights and inputs (see course_utils.bench.moe.benchmark_moe): the
syllabus's masked loop (naive), transformers' MixtralSparseMoeBlock (eager experts), a dense
baseline running every expert on every token, MoELayer (sort by expert, one matmul per expert)
and MoELayer with one grouped GEMM (torch grouped_mm; bfloat16 on CUDA).

The bar on CPU: MoELayer no slower than naive and transformers at every size, and at 4096
tokens at least 3x the dense baseline (ideal num_experts / top_k = 4x). Exit status 1 when
--check is given and the bar is missed.
"""

from __future__ import annotations

import argparse
import sys

import torch

from course_utils.bench.moe import benchmark_moe, format_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 256, 4096])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy shared CPU)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the CPU bar is missed")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = benchmark_moe(args.tokens, d_model=args.d_model, d_ff=args.d_ff, num_experts=args.experts,
                         top_k=args.top_k, repeats=args.repeats, warmup=args.warmup, device=args.device,
                         num_threads=args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"{args.experts} experts, top-{args.top_k}, d_model {args.d_model}, d_ff {args.d_ff}; "
          f"median of {args.repeats}")
    print(format_benchmark(rows))

    by = {(r["tokens"], r["impl"]): r for r in rows}
    ok = True
    print("\nMoELayer speed-up (tokens/s ratio):")
    for n in args.tokens:
        r = by[(n, "MoELayer")]
        print(f"  {n:>5} tokens: {r['vs_naive']:.2f}x naive, {r['vs_transformers']:.2f}x transformers, "
              f"{r['vs_dense']:.2f}x dense (ideal {args.experts / args.top_k:.1f}x)")
        ok &= r["vs_naive"] >= 1.0 and r["vs_transformers"] >= 1.0
    largest = max(args.tokens)
    ok &= by[(largest, "MoELayer")]["vs_dense"] >= 3.0
    if (largest, "MoELayer grouped_mm") in by:
        loop = by.get((largest, "MoELayer bf16"), by[(largest, "MoELayer")])
        ratio = by[(largest, "MoELayer grouped_mm")]["tokens_per_s"] / loop["tokens_per_s"]
        print(f"  grouped GEMM vs per-expert loop ({loop['impl']}) at {largest} tokens: {ratio:.2f}x")
    print(f"\nbar (no slower than naive and transformers everywhere, >= 3x dense at {largest}): "
          f"{'met' if ok else 'MISSED'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
