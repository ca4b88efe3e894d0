"""Benchmark chapter 04's claims in one run and print them as ratios against their baselines.

    python scripts/bench_training.py            # the issue's sizes (~5-10 min on 2 busy cores)
    python scripts/bench_training.py --quick    # smaller, for a smoke check

* ZeRO-1 optimizer bytes per rank / DDP's (bar ≤ 0.55 at world size 2);
* FSDP2 ZeRO-3 parameter bytes per rank / DDP's (bar ≤ 0.55);
* every strategy's final loss vs single-process, fp32 (bar: relative gap ≤ 1e-3);
* communication volume per step / the ZeRO paper's theory (DDP 2Ψ, ZeRO-3 3Ψ);
* gradient checkpointing on a 16-layer TinyLlama: saved activations no-ckpt / ckpt (bar ≥ 3×)
  and step time ckpt / no-ckpt (bar ≤ 1.4×);
* tiled attention peak memory: naive / tiled at 4,096 tokens (bar ≥ 10×), and SDPA's CPU flash
  kernel time / naive;
* MFU of the single-process and DDP runs against this machine's measured fp32 matmul peak.

Distributed runs go through the course's training script under torchrun (2 gloo ranks, 1 thread
each). Timings on a shared machine are noisy: medians, one run. Exit status 1 with --check when a
bar is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_utils.arch import TinyLlamaConfig  # noqa: E402
from course_utils.training import (  # noqa: E402
    StrategyResult,
    attention_peak_memory,
    comm_volume,
    expected_comm_volume,
    matmul_peak_flops,
    measure_checkpointing,
    mfu,
    relative_gap,
    time_attention,
    torchrun,
    training_flops_per_token,
)
from course_utils.training.distributed import TrainConfig, build_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--json", default=None, help="also write every measured number here")
    ap.add_argument("--check", action="store_true", help="exit 1 if a bar is missed")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    q = args.quick
    out: dict = {"torch": torch.__version__}
    rows: list[tuple[str, float, str, bool | None]] = []
    t0 = time.perf_counter()

    # 1. strategies on two gloo ranks
    dist_args = {"hidden-size": 32 if q else 64, "num-layers": 2 if q else 4, "seq-len": 32 if q else 64,
                 "global-batch": 4 if q else 8, "steps": 4 if q else 20}
    report = torchrun([x for k, v in dist_args.items() for x in (f"--{k}", str(v))], nproc=2, echo=True,
                      timeout=1800)
    out["distributed"] = report
    runs = {r["strategy"]: StrategyResult(**r) for r in report["results"]}
    ddp, single = runs["ddp"], runs["single"]
    psi = ddp.num_params
    z1 = max(runs["zero1"].optimizer_bytes) / ddp.optimizer_bytes[0]
    rows.append(("ZeRO-1 optimizer bytes per rank / DDP", z1, "<= 0.55", z1 <= 0.55))
    z3 = max(runs["fsdp2_zero3"].params_bytes) / ddp.params_bytes[0]
    rows.append(("FSDP2 ZeRO-3 parameter bytes per rank / DDP", z3, "<= 0.55", z3 <= 0.55))
    z3f = max(runs["fsdp2_zero3"].params_fwd_bytes) / ddp.params_fwd_bytes[0]
    rows.append(("FSDP2 ZeRO-3 params held fwd->bwd / DDP", z3f, "", None))
    z2f = max(runs["fsdp2_zero2"].params_fwd_bytes) / ddp.params_fwd_bytes[0]
    rows.append(("FSDP2 ZeRO-2 params held fwd->bwd / DDP", z2f, "", None))
    for name, r in runs.items():
        gap = relative_gap(r.losses[-1], single.losses[-1])
        rows.append((f"{name}: final-loss gap to single process", gap, "<= 1e-3", gap <= 1e-3))
    for name, r in runs.items():
        if name != "single":
            rows.append((f"{name}: comm volume / theory", comm_volume(r) / expected_comm_volume(name, psi), "~1", None))
    for name, r in runs.items():
        rows.append((f"{name}: step time / DDP", r.step_seconds / ddp.step_seconds, "", None))

    # 2. MFU against the measured matmul peak (one thread, as each rank uses)
    cfg = TrainConfig(hidden_size=dist_args["hidden-size"], num_layers=dist_args["num-layers"])
    model = build_model(cfg)
    fpt = training_flops_per_token(model, dist_args["seq-len"])
    peak = matmul_peak_flops(512 if q else 1024)
    tokens = dist_args["global-batch"] * dist_args["seq-len"]
    out["mfu"] = {"peak_flops_1thread": peak, "flops_per_token": fpt,
                  "single": mfu(tokens / single.step_seconds, fpt, peak),
                  "ddp_per_rank": mfu(tokens / 2 / ddp.step_seconds, fpt, peak)}
    rows.append(("MFU single process (vs 1-thread matmul peak)", out["mfu"]["single"], "", None))
    rows.append(("MFU DDP, per rank", out["mfu"]["ddp_per_rank"], "", None))

    # 3. gradient checkpointing, 16 layers
    ck_cfg = TinyLlamaConfig(vocab_size=256, hidden_size=64 if q else 128, intermediate_size=176 if q else 344,
                             num_hidden_layers=16, num_attention_heads=4)
    ck = measure_checkpointing(ck_cfg, [None, 1, 4], batch_size=4, seq_len=64 if q else 256, repeats=3 if q else 5)
    out["checkpointing"] = ck
    by = {r["segment"]: r for r in ck}
    saved_ratio = by[0]["saved_bytes"] / by[1]["saved_bytes"]
    time_ratio = by[1]["step_seconds"] / by[0]["step_seconds"]
    rows.append(("checkpointing: saved activations none / every layer", saved_ratio, ">= 3", saved_ratio >= 3))
    rows.append(("checkpointing: step time every layer / none", time_ratio, "<= 1.4", time_ratio <= 1.4))
    rows.append(("checkpointing: peak step memory none / every layer", by[0]["peak_bytes"] / by[1]["peak_bytes"], "",
                 None))
    rows.append(("checkpointing: peak step memory none / sqrt(L)=4", by[0]["peak_bytes"] / by[4]["peak_bytes"], "",
                 None))

    # 4. attention memory and time
    ns = [512, 1024, 2048, 4096]
    mem = attention_peak_memory(ns, head_dim=64, num_heads=1)
    mem_bwd = attention_peak_memory([4096] if not q else [1024], head_dim=64, num_heads=1, backward=True)
    times = time_attention([1024, 2048] if q else [1024, 2048, 4096], num_heads=8)
    out["attention_memory"], out["attention_memory_backward"], out["attention_time"] = mem, mem_bwd, times
    last = mem[-1]
    ratio = last["naive_bytes"] / last["tiled_bytes"]
    rows.append((f"attention peak memory naive / tiled at {last['seq_len']} tokens", ratio, ">= 10", ratio >= 10))
    b = mem_bwd[-1]
    rows.append((f"attention peak memory fwd+bwd naive / tiled at {b['seq_len']}", b["naive_bytes"] / b["tiled_bytes"],
                 "", None))
    for t in times:
        rows.append((f"attention time naive / SDPA flash at {t['seq_len']}",
                     t["naive_seconds"] / t["sdpa_flash_seconds"], "", None))
        rows.append((f"attention time tiled (Python loops) / SDPA flash at {t['seq_len']}",
                     t["tiled_seconds"] / t["sdpa_flash_seconds"], "", None))

    out["seconds"] = time.perf_counter() - t0
    print(f"\ntorch {torch.__version__}; 2 gloo ranks x 1 thread; {out['seconds']:.0f} s in all "
          f"(timings noisy on a shared machine)")
    print(f"{'measurement':<58} {'ratio':>10}  {'bar':<9} ok")
    for name, value, bar, ok in rows:
        mark = "" if ok is None else ("yes" if ok else "NO")
        print(f"{name:<58} {value:>10.4g}  {bar:<9} {mark}")
    print("\nattention peak bytes by sequence length (forward, 1 head, d=64):")
    for m in mem:
        print(f"  N={m['seq_len']:>5}: naive {m['naive_bytes'] / 1e6:8.2f} MB, tiled {m['tiled_bytes'] / 1e6:6.2f} MB, "
              f"one N x N fp32 matrix {m['score_matrix_bytes'] / 1e6:8.2f} MB")
    out["rows"] = [{"name": n, "value": v, "bar": bar, "ok": ok} for n, v, bar, ok in rows]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    missed = [n for n, _, _, ok in rows if ok is False]
    if missed:
        print("\nbars missed:", "; ".join(missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
