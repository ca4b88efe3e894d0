"""Model FLOPs utilisation (MFU, Chowdhery et al., 2022, PaLM, appendix B).

    MFU = (tokens/s × training FLOPs per token) / peak FLOP/s of the hardware

Training FLOPs per token: ``6·N`` for the matrix multiplications of ``N`` weights (2 forward,
4 backward), plus ``12·L·H·Q·T`` for attention's ``QKᵀ`` and ``PV`` products over a context of
``T`` (``H`` heads of size ``Q``, ``L`` layers). The embedding lookup is not a matmul and does not
count; the LM head does. The peak here is *measured*: the best FLOP/s of a large square matmul on
this machine (a GPU's datasheet peak is the usual denominator; a measured one is the honest bar).
"""

from __future__ import annotations

import time

import torch

from course_utils import checks


def matmul_peak_flops(size: int = 2048, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                      repeats: int = 5) -> float:
    """Best FLOP/s over ``repeats`` of a ``size × size`` by ``size × size`` matmul (``2·size³`` FLOPs)."""
    checks.positive_int(size=size, repeats=repeats)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def matmul_params(model: torch.nn.Module) -> int:
    """Weights that take part in matrix multiplications: every ``nn.Linear`` (the LM head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def training_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """``6·N + 12·L·H·Q·T`` for a :class:`TinyLlama` (module docstring)."""
    checks.positive_int(seq_len=seq_len)
    c = model.config
    return 6 * matmul_params(model) + 12 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq_len


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Achieved FLOP/s over peak FLOP/s."""
    checks.positive_number(tokens_per_second=tokens_per_second, flops_per_token=flops_per_token,
                           peak_flops=peak_flops)
    return tokens_per_second * flops_per_token / peak_flops
