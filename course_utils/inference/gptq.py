"""GPTQ (Frantar et al. 2023): quantize a linear layer column by column and push each column's
rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the layer's
reconstruction loss.

For a layer ``y = W x`` with calibration inputs ``X`` (``in × n``), GPTQ minimizes
``‖W X - Ŵ X‖²`` row by row; its Hessian is ``H = 2 X Xᵀ / n`` (``in × in``, shared by all rows).
Quantizing column ``j`` to ``q_j`` with error ``e_j = (w_j - q_j) / [H⁻¹]_jj`` is compensated
optimally (Optimal Brain Surgeon) by ``W[:, k] -= e_j · [H⁻¹]_jk`` for the later columns ``k > j``,
then column ``j`` is removed from the problem. Three tricks make this fast and stable:

* **Cholesky form.** The rows of ``H⁻¹`` needed after removing columns ``< j`` are exactly the rows
  of the upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = Uᵀ U``), so one factorization replaces
  ``in`` rank-one downdates; ``H`` is first dampened, ``H + λ·mean(diag H)·I``, to stay positive
  definite.
* **Lazy batch updates.** Columns are processed in blocks of ``B`` (128): inside a block the
  updates touch only the block; the rest of ``W`` gets one matrix product per block,
  ``W[:, after] -= E · U[block, after]`` — the same result with far fewer memory passes.
* **Groups and act-order.** With ``group_size`` g, each run of g columns gets its own
  zero-point scale, computed when the quantizer reaches the group's first column (from the
  already-updated weights; with lazy batches the columns past the current block have not yet
  received the block's updates, which only matters for a group that crosses a block boundary —
  never when g divides ``block_size``). With ``act_order``, columns are visited in decreasing ``diag(H)``
  (the inputs with the most energy first) and the result is permuted back; the group of a
  column then follows the visiting order (``g_idx``).

Columns whose input is always zero (``H_jj = 0``) are set to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from course_utils import checks
from course_utils.inference.intquant import zeropoint_params, zeropoint_round


@dataclass
class GPTQResult:
    """``weight``: the dequantized weight (the input's shape and dtype); ``scale``/``zero``:
    ``(rows, n_groups)`` in visiting order; ``g_idx``: the group of each (original) column;
    ``perm``: the visiting order (None without act-order); ``loss``: ``Σ e_j² / 2``, the
    objective's increase GPTQ accounts for."""

    weight: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    g_idx: torch.Tensor
    perm: torch.Tensor | None
    loss: float


def hessian_from_inputs(x: torch.Tensor) -> torch.Tensor:
    """``H = 2 X Xᵀ / n`` from inputs ``x`` of shape ``(..., in)`` (n = number of rows), float32."""
    checks.tensor("x", x, floating=True)
    flat = x.reshape(-1, x.shape[-1]).float()
    return 2.0 * flat.T @ flat / flat.shape[0]


def gptq_quantize_weight(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int | None = 128,
                         act_order: bool = False, block_size: int = 128, damp: float = 0.01) -> GPTQResult:
    """Quantize ``weight`` (out, in) with GPTQ given ``hessian`` (in, in); see the module docstring.

    Args:
        bits: code width (zero-point quantization, ``2^b`` levels).
        group_size: columns per scale (None: one scale per row over all columns).
        act_order: visit columns in decreasing ``diag(H)``.
        block_size: columns per lazy batch (any value gives the same result, up to rounding).
        damp: λ, the dampening as a fraction of the mean diagonal.
    """
    checks.tensor("weight", weight, ndim=2, floating=True, shape="(out_features, in_features)")
    checks.tensor("hessian", hessian, ndim=2, floating=True, shape="(in_features, in_features)")
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian must be ({cols}, {cols}) for a weight with {cols} columns, got {tuple(hessian.shape)}")
    checks.positive_int(bits=bits, block_size=block_size)
    checks.positive_number(damp=damp)
    if group_size is not None:
        checks.positive_int(group_size=group_size)
    group = group_size or cols
    work = torch.float64 if weight.dtype == torch.float64 else torch.float32  # float64 in, float64 math
    W = weight.detach().to(work).clone()
    H = hessian.detach().to(work).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, device=H.device, dtype=work)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # H⁻¹ = Uᵀ U

    Q = torch.zeros_like(W)
    scales, zeros = [], []
    loss = 0.0
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        W_blk, U_blk = W[:, start:end].clone(), U[start:end, start:end]
        E_blk = torch.zeros_like(W_blk)
        for i in range(end - start):
            j = start + i
            if j % group == 0:  # a new group: scale from the current (already updated) weights
                scale, zero = zeropoint_params(torch.cat([W_blk[:, i:], W[:, end:]], dim=1)[:, :group], bits)
                scales.append(scale)
                zeros.append(zero)
            w = W_blk[:, i]
            q = zeropoint_round(w.unsqueeze(1), scale, zero, bits).squeeze(1)
            Q[:, j] = q
            err = (w - q) / U_blk[i, i]
            loss += float((err**2).sum()) / 2
            W_blk[:, i:] -= err.unsqueeze(1) @ U_blk[i, i:].unsqueeze(0)  # compensate inside the block
            E_blk[:, i] = err
        W[:, end:] -= E_blk @ U[start:end, end:]  # lazy batch update of everything after the block
    g_idx = torch.arange(cols, device=W.device) // group
    if perm is not None:
        inverse = torch.argsort(perm)
        Q, g_idx = Q[:, inverse], g_idx[inverse]
    return GPTQResult(Q.to(weight.dtype), torch.cat(scales, 1), torch.cat(zeros, 1), g_idx, perm, loss)


def gptq_fake_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int | None = 128,
                       damp: float = 0.01) -> torch.Tensor:
    """GPTQ's dequantized weight ``Ŵ`` only (natural column order), for the lab."""
    return gptq_quantize_weight(weight, hessian, bits, group_size, damp=damp).weight


def layer_output_error(weight: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Relative output error of a linear layer on inputs ``x``: ``‖x Wᵀ - x Ŵᵀ‖_F / ‖x Wᵀ‖_F``."""
    checks.same_shape(weight=weight, w_hat=w_hat)
    flat = x.reshape(-1, x.shape[-1]).float()
    ref = flat @ weight.float().T
    return float((ref - flat @ w_hat.float().T).norm() / ref.norm())
