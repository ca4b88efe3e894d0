"""Integer quantization: absmax (symmetric) and zero-point (asymmetric), per tensor, per channel
(one scale per output row) and per group (one scale per ``group_size`` consecutive inputs of a row).

With ``b`` bits, absmax maps ``w`` to signed integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]``::

    s = max|w| / (2^(b-1) - 1)          q = round(w / s)          ŵ = s · q

Zero-point uses all ``2^b`` levels of an unsigned integer ``[0, 2^b - 1]`` and a shift ``z``, so an
asymmetric range (e.g. after a ReLU, or a skewed row) wastes no level. The range is widened to
contain 0, so that 0 stays exactly representable (as PyTorch's observers and GPTQ do)::

    lo = min(min w, 0),  hi = max(max w, 0),  s = (hi - lo) / (2^b - 1),  z = round(-lo / s)
    q = clamp(round(w / s) + z, 0, 2^b - 1)                      ŵ = s · (q - z)

Granularity decides which weights share one ``(s, z)``: one outlier inflates ``s`` for every
weight of its group, so smaller groups give smaller error at the cost of more constants
(``32 / group_size`` extra bits per weight for an fp32 scale, more with a zero-point).
``round`` is round-half-to-even (``torch.round``). A group of zeros gets ``s = 1`` (any scale
reconstructs it exactly), never a division by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from course_utils import checks

GRANULARITIES = ("tensor", "channel", "group")


@dataclass
class IntQuantized:
    """Integer codes and the constants to undo them.

    ``q`` has the shape of the input (int8 for absmax, uint8 for zero-point, holding values in the
    range of ``bits``); ``scale`` (and ``zero`` for zero-point, else None) have shape ``(1, 1)``
    for a tensor, ``(rows, 1)`` per channel, ``(rows, ceil(cols / group_size))`` per group (the last group may be
    shorter, e.g. 576 = 4 × 128 + 64 columns)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    bits: int
    granularity: str
    group_size: int | None
    dtype: torch.dtype


def _grouped(w: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    """View ``w`` (rows, cols) as (rows', k, members): the ``members`` of each (row', k) share one
    scale. Per group, a last partial group is zero-padded (zeros change neither ``max|w|`` nor a
    range that already contains 0)."""
    rows, cols = w.shape
    if granularity == "tensor":
        return w.reshape(1, 1, rows * cols)
    if granularity == "channel":
        return w.reshape(rows, 1, cols)
    padded = torch.nn.functional.pad(w, (0, -cols % group_size))
    return padded.reshape(rows, -1, group_size)


def _ungrouped(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_grouped` (drops the padding)."""
    return g.reshape(shape[0], -1)[:, : shape[1]] if g.shape[0] == shape[0] else g.reshape(shape)


def _work(w: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; every other dtype is computed in float32."""
    return w if w.dtype == torch.float64 else w.float()


def absmax_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax quantization of each row (last dimension) of ``x`` → ``(q int8, scale)``, ``scale`` of
    shape ``(..., 1)``: ``s = max|x| / (2^(b-1) - 1)`` (1 for an all-zero row), ``q = round(x / s)``."""
    checks.tensor("x", x, floating=True)
    checks.positive_int(bits=bits)
    checks.number("bits", bits, low=2, high=8)
    qmax = 2 ** (bits - 1) - 1
    work = _work(x)
    absmax = work.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    return torch.clamp(torch.round(work / scale), -qmax, qmax).to(torch.int8), scale


def absmax_dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x̂ = s · q`` (in the scale's dtype)."""
    return q.to(scale.dtype) * scale


def zeropoint_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-point quantization of each row (last dimension) of ``x`` → ``(q uint8, scale, zero)``
    (see :func:`zeropoint_params`): ``q = clamp(round(x / s) + z, 0, 2^b - 1)``."""
    checks.tensor("x", x, floating=True)
    checks.positive_int(bits=bits)
    checks.number("bits", bits, low=2, high=8)
    work = _work(x)
    scale, zero = zeropoint_params(work, bits)
    q = torch.clamp(torch.round(work / scale) + zero, 0, 2**bits - 1).to(torch.uint8)
    return q, scale, zero


def zeropoint_dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``x̂ = s · (q - z)`` (in the scale's dtype)."""
    return (q.to(scale.dtype) - zero) * scale


def _check(w: torch.Tensor, bits: int, granularity: str, group_size: int | None) -> None:
    checks.tensor("w", w, ndim=2, floating=True, shape="(out_features, in_features)")
    checks.positive_int(bits=bits)
    checks.number("bits", bits, low=2, high=8)
    checks.one_of("granularity", granularity, GRANULARITIES)
    if granularity == "group":
        checks.positive_int(group_size=group_size)


def quantize_absmax(w: torch.Tensor, bits: int = 8, granularity: str = "channel",
                    group_size: int | None = None) -> IntQuantized:
    """Symmetric (absmax) quantization of a 2-D weight ``(out, in)``: ``s = max|w| / (2^(b-1)-1)``,
    ``q = round(w / s)`` in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (the level -2^(b-1) is left unused so
    that the grid is symmetric). Computed in float32 (float64 for float64 input)."""
    _check(w, bits, granularity, group_size)
    q, scale = absmax_quantize(_grouped(w, granularity, group_size), bits)
    return IntQuantized(_ungrouped(q, w.shape), scale.squeeze(-1), None, bits, granularity, group_size, w.dtype)


def zeropoint_params(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point of each row of ``x`` (reduced over the last dimension, kept as size 1):
    ``lo = min(min x, 0)``, ``hi = max(max x, 0)``, ``s = (hi - lo) / (2^b - 1)``, ``z = round(-lo / s)``."""
    lo = x.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = x.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = torch.where(hi > lo, (hi - lo) / (2**bits - 1), torch.ones_like(hi))
    return scale, torch.round(-lo / scale)


def zeropoint_round(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``x`` to the grid ``s · (q - z)``, ``q ∈ [0, 2^b - 1]`` (quantize and dequantize)."""
    q = torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def quantize_zeropoint(w: torch.Tensor, bits: int = 8, granularity: str = "channel",
                       group_size: int | None = None) -> IntQuantized:
    """Asymmetric (zero-point) quantization: ``lo = min(min w, 0)``, ``hi = max(max w, 0)``,
    ``s = (hi - lo) / (2^b - 1)``, ``z = round(-lo / s)``, ``q = clamp(round(w / s) + z, 0, 2^b - 1)``.
    Computed in float32 (float64 for float64 input)."""
    _check(w, bits, granularity, group_size)
    q, scale, zero = zeropoint_quantize(_grouped(w, granularity, group_size), bits)
    return IntQuantized(_ungrouped(q, w.shape), scale.squeeze(-1), zero.squeeze(-1), bits, granularity, group_size,
                        w.dtype)


def dequantize(qt: IntQuantized) -> torch.Tensor:
    """``ŵ = s · q`` (absmax) or ``ŵ = s · (q - z)`` (zero-point), in the input's dtype."""
    checks.instance("qt", qt, IntQuantized)
    g = _grouped(qt.q.to(qt.scale.dtype), qt.granularity, qt.group_size)
    if qt.zero is not None:
        g = g - qt.zero.unsqueeze(-1)
    return _ungrouped(g * qt.scale.unsqueeze(-1), qt.q.shape).to(qt.dtype)


def fake_quantize(w: torch.Tensor, bits: int = 4, granularity: str = "group", group_size: int | None = 128,
                  symmetric: bool = False) -> torch.Tensor:
    """Round-to-nearest (RTN): quantize then dequantize, ``ŵ`` in the dtype of ``w``; the baseline
    that GPTQ and AWQ improve on."""
    quantize = quantize_absmax if symmetric else quantize_zeropoint
    return dequantize(quantize(w, bits, granularity, group_size))


def quantization_error(w: torch.Tensor, w_hat: torch.Tensor) -> dict[str, float]:
    """How far ``ŵ`` is from ``w``: ``{"mse", "max_abs", "rel_fro"}`` with
    ``rel_fro = ‖w - ŵ‖_F / ‖w‖_F``."""
    checks.tensor("w", w, floating=True)
    checks.tensor("w_hat", w_hat, floating=True)
    checks.same_shape(w=w, w_hat=w_hat)
    diff = w.float() - w_hat.float()
    norm = w.float().norm()
    return {"mse": float(diff.pow(2).mean()), "max_abs": float(diff.abs().max()),
            "rel_fro": float(diff.norm() / norm) if norm > 0 else float(diff.norm())}


def storage_bits_per_weight(bits: int, granularity: str, group_size: int | None, shape: tuple[int, int],
                            *, zero_point: bool = True, scale_bits: int = 16) -> float:
    """Average bits per weight including the constants: ``bits + n_groups · (scale_bits + z) / n``
    with ``z = bits`` for a zero-point (stored at the code's width), 0 for absmax."""
    rows, cols = shape
    n_groups = {"tensor": 1, "channel": rows, "group": rows * -(-cols // (group_size or cols))}[granularity]
    per_group = scale_bits + (bits if zero_point else 0)
    return bits + n_groups * per_group / (rows * cols)
