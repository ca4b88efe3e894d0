"""The two small layers every LLaMA-style block uses: RMSNorm and the SwiGLU feed-forward.

RMSNorm (Zhang & Sennrich, 2019) drops LayerNorm's mean-centring and bias:

    RMSNorm(x) = g ⊙ x / sqrt(mean(x²) + ε)

SwiGLU (Shazeer, 2020) gates one projection of the input with the Swish (SiLU) of another:

    SwiGLU(x) = W_down · (SiLU(W_gate·x) ⊙ W_up·x),   SiLU(z) = z·σ(z)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import checks


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension, with a learned gain ``weight``.

    The statistic is computed in float32 and the result cast back, as in LLaMA, so bf16 and
    fp16 activations do not lose precision in ``mean(x²)``.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        checks.positive_int(hidden_size=hidden_size)
        checks.positive_number(eps=eps)
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checks.tensor("x", x, last_dim=self.weight.shape[0], shape=f"(..., hidden_size={self.weight.shape[0]})")
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SwiGLU(nn.Module):
    """LLaMA's feed-forward: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, no biases.

    It has three ``hidden_size × intermediate_size`` matrices instead of the classic MLP's two,
    which is why LLaMA uses ``intermediate_size ≈ 8/3 · hidden_size`` rather than ``4 · hidden_size``:
    the parameter count stays the same.
    """

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        checks.positive_int(hidden_size=hidden_size, intermediate_size=intermediate_size)
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
