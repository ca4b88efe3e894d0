"""NF4 (4-bit NormalFloat) from scratch, as QLoRA (Dettmers et al. 2023) defines it and
bitsandbytes stores it.

**The codebook.** Pretrained weights are roughly normal, so the 16 levels are quantiles of
N(0, 1) rather than evenly spaced: 8 positive levels at the quantiles ``Φ⁻¹(p)`` for ``p`` evenly
spaced in ``[0.5, δ]`` and 7 negative ones for ``p`` in ``[0.5, δ]`` again (mirrored), with
``δ = 0.9677083`` so that the outermost quantile is finite, plus an exact 0 (so that zero-padding
and exact zeros survive); all divided by the largest, giving levels in ``[-1, 1]``.

**Blockwise absmax.** Each block of 64 consecutive weights (flattened row-major) stores one
``absmax = max|w|``; each weight stores the 4-bit index of the level closest to ``w / absmax``
(bitsandbytes rounds to the nearest level through the midpoints between levels). Two indices
share a byte, the first in the high nibble. Dequantization: ``ŵ = level[q] · absmax``.

**Double quantization.** A 32-bit absmax per 64 weights costs 0.5 bit/weight. QLoRA quantizes
the absmaxes themselves: subtract their mean ``c``, then quantize blocks of 256 of them to 8 bits
with bitsandbytes' *dynamic* map (a signed 8-bit float-like code, Dettmers 2015) and one fp32
absmax per 256 absmaxes: ``8/64 + 32/(64·256) ≈ 0.127`` bit/weight instead of 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from course_utils import checks

NF4_OFFSET = 0.9677083  # δ of the QLoRA paper: the outermost quantile used for the codebook


def nf4_codebook() -> torch.Tensor:
    """The 16 NF4 levels (float32, sorted, ``level[7] = 0``, ``level[0] = -1``, ``level[15] = 1``):
    normal quantiles ``Φ⁻¹(p)``, ``p ∈ linspace(δ, 0.5, 9)[:-1]`` (positive side) and
    ``-Φ⁻¹(p)``, ``p ∈ linspace(δ, 0.5, 8)[:-1]`` (negative side), plus 0, scaled to ``[-1, 1]``."""
    from scipy.stats import norm

    positive = norm.ppf(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].numpy()).tolist()
    negative = (-norm.ppf(torch.linspace(NF4_OFFSET, 0.5, 8)[:-1].numpy())).tolist()
    levels = torch.tensor(sorted(positive + [0.0] + negative))
    return levels / levels.max()


def dynamic_codebook() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (256 sorted float32 values in ``[-1, 1]``): for each
    exponent ``e = 0..6`` the midpoints of ``2^e + 1`` linearly spaced fractions in ``[0.1, 1]``
    scaled by ``10^(e - 6)``, both signs, plus 0 and 1 (used for the double-quantized absmaxes)."""
    values: list[float] = []
    for e in range(7):
        bounds = torch.linspace(0.1, 1, 2**e + 1)
        means = ((bounds[:-1] + bounds[1:]) / 2.0 * 10 ** (e - 6)).tolist()
        values += means + [-m for m in means]
    values += [0.0, 1.0]
    return torch.tensor(sorted(values + [0.0] * (256 - len(values))))


def nearest_level(scaled: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the closest of the sorted ``levels`` for each value of ``scaled``, through the
    midpoints between consecutive levels (a value on a midpoint goes to the lower level), as
    bitsandbytes' reference kernels do."""
    midpoints = (levels[:-1] + levels[1:]) / 2
    return torch.bucketize(scaled, midpoints)


def quantize_blockwise(x: torch.Tensor, levels: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantization of a flattened tensor to the indices of ``levels``:
    → ``(codes (n,) uint8, absmax (n_blocks,) float32)``. The last block may be shorter."""
    flat = x.reshape(-1).float()
    n_blocks = -(-flat.numel() // blocksize)
    padded = torch.nn.functional.pad(flat, (0, n_blocks * blocksize - flat.numel()))
    blocks = padded.reshape(n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38))[:, None], -1, 1)
    codes = nearest_level(scaled, levels.to(flat.device)).to(torch.uint8)
    return codes.reshape(-1)[: flat.numel()], absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor,
                         blocksize: int) -> torch.Tensor:
    """``level[code] · absmax[block]`` for a flat tensor of codes (float32)."""
    values = levels.to(codes.device)[codes.long()]
    block = torch.arange(values.numel(), device=codes.device) // blocksize
    return values * absmax[block]


def nf4_quantize(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 codes of ``w`` (flattened, one uint8 per weight, unpacked) and the float32 absmax of
    each block of ``blocksize`` consecutive weights (the last block may be shorter)."""
    checks.tensor("w", w, floating=True)
    checks.positive_int(blocksize=blocksize)
    return quantize_blockwise(w, nf4_codebook().to(w.device), blocksize)


def nf4_dequantize(codes: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, ...], blocksize: int = 64) -> torch.Tensor:
    """``ŵ = level[code] · absmax[block]`` reshaped to ``shape`` (float32)."""
    checks.tensor("codes", codes, floating=False)
    checks.positive_int(blocksize=blocksize)
    return dequantize_blockwise(codes.reshape(-1), absmax, nf4_codebook().to(codes.device), blocksize).reshape(shape)


@dataclass
class NF4Quantized:
    """A weight in NF4: ``packed`` (ceil(n/2), 1) uint8, two 4-bit codes per byte (first in the high
    nibble, bitsandbytes' layout); the block absmaxes, either plain (``absmax`` float32) or double
    quantized (``absmax`` uint8 codes of the dynamic map, ``absmax_scale`` float32 per 256 of them
    and ``offset``, their mean)."""

    packed: torch.Tensor
    absmax: torch.Tensor
    shape: tuple[int, ...]
    dtype: torch.dtype
    blocksize: int = 64
    offset: torch.Tensor | None = None
    absmax_scale: torch.Tensor | None = None
    absmax_blocksize: int = 256

    def num_bytes(self) -> int:
        """Bytes stored: packed codes plus the constants."""
        extra = 0 if self.absmax_scale is None else self.absmax_scale.numel() * 4 + 4
        return self.packed.numel() + self.absmax.numel() * self.absmax.element_size() + extra


def pack_nibbles(codes: torch.Tensor, pad: int = 7) -> torch.Tensor:
    """Two 4-bit codes per byte, the first in the high nibble; an odd length is padded with ``pad``
    (7, the NF4 level 0, as bitsandbytes pads with a zero value)."""
    codes = codes.reshape(-1).to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.nn.functional.pad(codes, (0, 1), value=pad)
    return ((codes[0::2] << 4) | codes[1::2]).unsqueeze(1)


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: the first ``n`` codes."""
    flat = packed.reshape(-1)
    codes = torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)
    return codes[:n]


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> NF4Quantized:
    """NF4-quantize ``w`` (any shape, fp32/fp16/bf16) in blocks of ``blocksize`` consecutive
    values; with ``double_quant``, the absmaxes are quantized again (8-bit dynamic map, blocks of
    256, after subtracting their mean). Same codes and constants as
    ``bitsandbytes.functional.quantize_4bit(w, blocksize, quant_type="nf4",
    compress_statistics=double_quant)``."""
    checks.tensor("w", w, floating=True)
    checks.positive_int(blocksize=blocksize)
    checks.non_empty("w", w.reshape(-1))
    codes, absmax = nf4_quantize(w, blocksize)
    packed = pack_nibbles(codes)
    if not double_quant:
        return NF4Quantized(packed, absmax, tuple(w.shape), w.dtype, blocksize)
    offset = absmax.mean()
    absmax_codes, absmax_scale = quantize_blockwise(absmax - offset, dynamic_codebook(), 256)
    return NF4Quantized(packed, absmax_codes, tuple(w.shape), w.dtype, blocksize, offset, absmax_scale)


def dequantize_nf4(qw: NF4Quantized) -> torch.Tensor:
    """``ŵ = level[q] · absmax`` per block, with ``absmax = dynamic[code] · scale + offset`` when
    double quantized; computed in float32, returned in the original dtype and shape."""
    checks.instance("qw", qw, NF4Quantized)
    absmax = qw.absmax
    if qw.absmax_scale is not None:
        absmax = dequantize_blockwise(qw.absmax, qw.absmax_scale, dynamic_codebook(), qw.absmax_blocksize) + qw.offset
    n = 1
    for size in qw.shape:
        n *= size
    return nf4_dequantize(unpack_nibbles(qw.packed, n), absmax, qw.shape, qw.blocksize).to(qw.dtype)
