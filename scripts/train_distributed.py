"""Train a TinyLlama on the Python-documentation corpus under data-parallel strategies.

One script for every launcher (see course_utils.training.launch):

    python scripts/train_distributed.py --strategies single                       # one process
    torchrun --standalone --nproc_per_node 2 scripts/train_distributed.py           # 2 ranks, gloo on CPU
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        scripts/train_distributed.py --backend nccl --device cuda                  # 32 GPUs
    sbatch scripts/launch/train.sbatch                                              # Slurm

Each rank trains every strategy in --strategies in turn (course_utils.training.distributed);
rank 0 writes a JSON report (--out): per strategy the loss curve, step time, per-rank bytes of
parameters/gradients/optimizer state and the collectives of one step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from course_utils.training.distributed import (  # noqa: E402
    STRATEGIES,
    TrainConfig,
    gloo_avg_is_correct,
    init_process_group,
    train_strategy,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated, from {STRATEGIES}; a '+sum' suffix (fsdp2_zero3+sum) runs that "
                        "strategy with the SUM-then-divide workaround whatever --avg-workaround says")
    defaults = TrainConfig()
    for name in ("hidden_size", "num_layers", "num_heads", "seq_len", "global_batch", "steps", "seed", "threads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (GPUs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--avg-workaround", choices=("auto", "on", "off"), default="auto",
                   help="FSDP2 reduce with SUM then divide (PyTorch #162338); auto: only if AVG is wrong here")
    p.add_argument("--out", default=None, help="where rank 0 writes the JSON report")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s.removesuffix("+sum") not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {STRATEGIES}")
    cfg = TrainConfig(**{k: getattr(args, k) for k in ("hidden_size", "num_layers", "num_heads", "seq_len",
                                                        "global_batch", "steps", "lr", "seed", "threads")})
    torch.set_num_threads(cfg.threads)
    rank, world = init_process_group(args.backend)
    device = args.device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    try:
        from course_utils.text_corpus import load_corpus

        if rank == 0:
            corpus = load_corpus("bytes")  # builds the on-disk cache once
        dist.barrier()
        if rank != 0:
            corpus = load_corpus("bytes")
        avg_ok = gloo_avg_is_correct() if world > 1 else {"all_reduce": True, "reduce_scatter": True}
        force_sum = {"on": True, "off": False, "auto": not all(avg_ok.values())}[args.avg_workaround]
        if rank == 0:
            print(f"world size {world}, backend {args.backend}, AVG correct: {avg_ok}, "
                  f"FSDP2 SUM workaround: {force_sum}", flush=True)
        results = []
        for strategy in strategies:
            r = train_strategy(strategy.removesuffix("+sum"), cfg, corpus.train, vocab_size=corpus.vocab_size,
                               device=device, force_sum=force_sum or strategy.endswith("+sum"))
            if rank == 0:
                print(f"{strategy:>16}: final loss {r.losses[-1]:.6f}, step {1000 * r.step_seconds:.1f} ms",
                      flush=True)
                results.append(r.as_dict())
        if rank == 0 and args.out:
            report = {"config": cfg.as_dict(), "world_size": world, "backend": args.backend,
                      "avg_correct": avg_ok, "avg_workaround": force_sum, "results": results}
            Path(args.out).write_text(json.dumps(report, indent=1))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
