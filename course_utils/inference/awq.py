"""AWQ, activation-aware weight quantization (Lin et al. 2024).

A few input channels of each linear layer carry much larger activations than the rest; the
weights that multiply them matter most. AWQ protects them without mixed precision by scaling:
``y = W x = (W · diag(s)) (diag(s)⁻¹ x)``. Multiplying the salient columns of ``W`` by ``s > 1``
before rounding shrinks their *relative* rounding error, and the ``1/s`` on the input is folded
into the operation that produces ``x`` (a norm's weight, or the rows of a previous linear), so
inference costs nothing extra.

The scale is searched per layer (per group of linears sharing one input), from calibration
activations: ``s = s_x^α`` with ``s_x = mean |x|`` per input channel, normalized by
``sqrt(max s · min s)``, and ``α`` on a grid over ``[0, 1]`` (``α = 0`` is plain RTN). The ``α``
that minimizes the output error ``‖W x - Q(W·s) (x / s)‖²`` of the group's linears wins.
In a LLaMA block the groups are ``input_layernorm → q, k, v``, ``post_attention_layernorm →
gate, up``, ``up → down`` (through the SwiGLU product), and ``v → o`` when ``v`` and ``o`` have
matching shapes (not with grouped-query attention, where ``o`` stays RTN, as in AutoAWQ).
AutoAWQ also searches a clipping range per group after scaling; this implementation does not.
"""

from __future__ import annotations

import torch

from course_utils import checks
from course_utils.inference.intquant import fake_quantize


def awq_search_scale(x: torch.Tensor, weights: list[torch.Tensor], bits: int = 4, group_size: int = 128,
                     n_grid: int = 20) -> tuple[torch.Tensor, float, list[float]]:
    """Grid-search the AWQ scale for linears that share the input ``x`` (``(..., in)``).

    Returns ``(s, best_alpha, errors)``: the per-input-channel scale ``s`` (``(in,)``), the chosen
    ``α`` and the output MSE for each grid point ``α = i / n_grid``, ``i = 0..n_grid-1``
    (``errors[0]`` is RTN's)."""
    checks.tensor("x", x, floating=True)
    checks.non_empty("weights", weights)
    checks.positive_int(n_grid=n_grid)
    flat = x.reshape(-1, x.shape[-1]).float()
    w = torch.cat([wt.detach().float() for wt in weights], dim=0)
    if w.shape[1] != flat.shape[1]:
        raise ValueError(f"weights have {w.shape[1]} input features, x has {flat.shape[1]}")
    reference = flat @ w.T
    s_x = flat.abs().mean(dim=0)
    errors = []
    best = (float("inf"), 0.0, torch.ones_like(s_x))
    for i in range(n_grid):
        alpha = i / n_grid
        s = s_x.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        w_q = fake_quantize(w * s, bits, "group", group_size) / s
        err = float((flat @ w_q.T - reference).pow(2).mean())
        errors.append(err)
        if err < best[0]:
            best = (err, alpha, s)
    return best[2], best[1], errors
