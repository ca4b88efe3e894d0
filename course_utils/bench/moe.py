"""The MoE benchmark of chapter 03 (``scripts/bench_moe.py`` and notebook 03 run it): tokens/s of
each implementation on the same weights and inputs, in one process, as ratios against baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from course_utils.arch.moe import MoELayer, dense_moe_forward, naive_moe_forward
from course_utils.bench.timing import interleaved_medians
from course_utils.runtime import torch_threads


def benchmark_moe(token_counts: Sequence[int] = (16, 256, 4096), *, d_model: int = 512, d_ff: int = 1024,
                  num_experts: int = 8, top_k: int = 2, repeats: int = 5, warmup: int = 1,
                  device: str = "cpu", seed: int = 0, num_threads: int | None = None,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Tokens/s of each MoE implementation on the same weights and inputs, in one process.

    Implementations: ``naive`` (:func:`naive_moe_forward`), ``transformers`` (a
    ``MixtralSparseMoeBlock`` with its default eager experts), ``dense``
    (:func:`dense_moe_forward`), ``MoELayer`` (grouped dispatch, one matmul per expert), and
    ``MoELayer grouped_mm`` (one grouped GEMM; bfloat16 on CUDA, float32 on CPU). On CUDA
    ``MoELayer bf16`` (the per-expert loop in bfloat16) is added, the fair baseline for
    the grouped GEMM.
    Each is run under ``torch.inference_mode`` with ``warmup`` calls, then timed ``repeats``
    times (interleaved across implementations); the median is reported. ``num_threads`` sets
    torch's CPU threads for the run (restored afterwards); on a CPU shared with other jobs,
    1 thread gives far steadier timings than oversubscribed cores.

    Returns rows ``{"tokens", "impl", "seconds", "tokens_per_s", "vs_naive", "vs_transformers",
    "vs_dense"}``
    where ``vs_X`` = tokens/s of this row / tokens/s of X at the same token count.
    """
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    from course_utils.runtime import resolve_device

    device = resolve_device(device)
    torch.manual_seed(seed)
    config = MixtralConfig(hidden_size=d_model, intermediate_size=d_ff, num_local_experts=num_experts,
                           num_experts_per_tok=top_k)
    config._experts_implementation = "eager"  # what a standalone block runs (and what "eager" means in a model)
    hf_block = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        for p in hf_block.parameters():
            p.normal_(0.0, 0.02)
    hf_block = hf_block.to(device).eval()
    layer = MoELayer.from_hf_mixtral(hf_block).eval()
    grouped = MoELayer.from_hf_mixtral(hf_block, method="grouped_mm").eval()
    loop_bf16 = None
    if device.startswith("cuda"):  # CUDA's grouped GEMM runs bfloat16: compare it with the loop in bfloat16
        grouped = grouped.to(torch.bfloat16)
        loop_bf16 = MoELayer.from_hf_mixtral(hf_block).eval().to(torch.bfloat16)
    has_grouped = hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    impls = {
        "naive": lambda x: naive_moe_forward(layer, x),
        "transformers": lambda x: hf_block(x.unsqueeze(0)),
        "dense": lambda x: dense_moe_forward(layer, x),
        "MoELayer": lambda x: layer(x).output,
    }
    if loop_bf16 is not None:
        impls["MoELayer bf16"] = lambda x: loop_bf16(x.to(torch.bfloat16)).output
    if has_grouped:
        impls["MoELayer grouped_mm"] = lambda x: grouped(x.to(grouped.gate_up_proj.dtype)).output

    rows: list[dict[str, Any]] = []
    sizes = token_counts
    if progress:
        from tqdm.auto import tqdm
        sizes = tqdm(token_counts, desc="benchmark_moe (token counts)")
    with torch_threads(num_threads), torch.inference_mode():
        for n in sizes:
            x = torch.randn(n, d_model, device=device)
            medians = interleaved_medians({name: (lambda fn=fn, x=x: fn(x)) for name, fn in impls.items()},
                                           repeats, warmup, sync)
            rows += [{"tokens": n, "impl": name, "seconds": sec, "tokens_per_s": n / sec}
                     for name, sec in medians.items()]
    for row in rows:
        same = {r["impl"]: r["tokens_per_s"] for r in rows if r["tokens"] == row["tokens"]}
        row["vs_naive"] = row["tokens_per_s"] / same["naive"]
        row["vs_transformers"] = row["tokens_per_s"] / same["transformers"]
        row["vs_dense"] = row["tokens_per_s"] / same["dense"]
    return rows


def format_benchmark(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`benchmark_moe` rows."""
    lines = [f"{'tokens':>6}  {'implementation':<20} {'tokens/s':>12} {'vs naive':>9} "
             f"{'vs transformers':>15} {'vs dense':>9}"]
    for r in rows:
        lines.append(f"{r['tokens']:>6}  {r['impl']:<20} {r['tokens_per_s']:>12,.0f} {r['vs_naive']:>8.2f}x "
                     f"{r['vs_transformers']:>14.2f}x {r['vs_dense']:>8.2f}x")
    return "\n".join(lines)
