"""Rotary position embeddings (RoPE, Su et al. 2021) in the two conventions found in the wild.

RoPE splits a head vector of even size ``d`` into ``d/2`` pairs and rotates pair ``i`` of the
token at position ``m`` by the angle ``m·θ_i``, with ``θ_i = base^(-2i/d)``. Written with complex
numbers (the syllabus's ``f(q, m) = q·e^{imθ}``), pair ``i`` is ``z_i = x_a + j·x_b`` and

    f(x, m)_i = z_i · e^{j m θ_i}   ⇔   (x_a, x_b) ↦ (x_a cos mθ_i − x_b sin mθ_i,  x_b cos mθ_i + x_a sin mθ_i)

Because ⟨f(q, m), f(k, n)⟩ = Re Σ_i q_i conj(k_i) e^{j(m−n)θ_i}, attention scores depend on the
positions only through ``m − n``.

Which coordinates form a pair is a convention:

* ``"interleaved"`` — pairs are adjacent coordinates ``(x[2i], x[2i+1])``; Meta's original LLaMA
  code (``torch.view_as_complex``) and the syllabus's snippet.
* ``"half"`` — pairs are ``(x[i], x[i + d/2])``, implemented with ``rotate_half``; transformers'
  LLaMA. The two are the same rotation after permuting the head dimensions
  (:func:`interleaved_to_half_permutation`); transformers' checkpoint converter permutes the
  rows of ``W_q`` and ``W_k`` exactly this way.
"""

from __future__ import annotations

import torch

from course_utils import checks

CONVENTIONS = ("half", "interleaved")


def _check_head_dim(head_dim: object) -> None:
    checks.positive_int(head_dim=head_dim)
    checks.divisible("head_dim", head_dim, 2, why="RoPE rotates pairs of dimensions")


def rope_inv_freq(head_dim: int, theta: float = 10000.0, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``d/2`` rotation frequencies ``θ_i = theta^(-2i/d)`` (float32 by default, as transformers)."""
    _check_head_dim(head_dim)
    checks.positive_number(theta=theta)
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=dtype, device=device) / head_dim))


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0, *, convention: str = "half",
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos(m·θ_i)`` and ``sin(m·θ_i)`` laid out for :func:`apply_rope`.

    Args:
        positions: integer positions, shape ``(seq,)`` or ``(batch, seq)``.
        head_dim: the (even) size of a head.
        convention: ``"half"`` repeats the ``d/2`` angles as ``[θ_0..θ_{d/2-1}, θ_0..θ_{d/2-1}]``;
            ``"interleaved"`` as ``[θ_0, θ_0, θ_1, θ_1, ...]``.

    Returns:
        ``(cos, sin)``, each of shape ``positions.shape + (head_dim,)``, computed in float32 (float64
        when ``dtype`` is float64) and cast to ``dtype``.
    """
    checks.one_of("convention", convention, CONVENTIONS)
    checks.tensor("positions", positions, ndim=(1, 2), shape="(seq,) or (batch, seq)")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = rope_inv_freq(head_dim, theta, device=positions.device, dtype=work)
    angles = positions.to(work)[..., None] * inv_freq  # (..., d/2)
    if convention == "half":
        angles = torch.cat((angles, angles), dim=-1)
    else:
        angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] ↦ [−x2, x1]`` on the two halves of the last dimension (pairs ``(x[i], x[i+d/2])``)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """``(x[2i], x[2i+1]) ↦ (−x[2i+1], x[2i])`` on adjacent pairs (the syllabus's ``q_rot``)."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, convention: str = "half") -> torch.Tensor:
    """Rotate ``x`` of shape ``(batch, heads, seq, head_dim)``: ``x·cos + rotate(x)·sin``.

    ``cos``/``sin`` come from :func:`rope_cos_sin` (or transformers' ``LlamaRotaryEmbedding``)
    with shape ``(seq, head_dim)`` or ``(batch, seq, head_dim)``; the latter is broadcast over heads.
    """
    checks.one_of("convention", convention, CONVENTIONS)
    checks.tensor("x", x, ndim=4, shape="(batch, heads, seq, head_dim)")
    _check_head_dim(x.shape[-1])
    if cos.shape != sin.shape or cos.shape[-1] != x.shape[-1] or cos.shape[-2] != x.shape[-2]:
        raise ValueError(f"cos/sin of shape {tuple(cos.shape)}/{tuple(sin.shape)} do not fit x of shape "
                         f"{tuple(x.shape)}: expected (..., seq={x.shape[-2]}, head_dim={x.shape[-1]})")
    if cos.dim() == 3:  # (batch, seq, d) -> (batch, 1, seq, d)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rotate = rotate_half if convention == "half" else rotate_interleaved
    return x * cos + rotate(x) * sin


def apply_rope_at(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoPE (rotate-half convention) of ``x`` ``(batch, heads, seq, head_dim)`` at integer ``positions``
    ``(seq,)``: angles in float32, ``cos``/``sin`` cast to ``x``'s dtype, then :func:`apply_rope`."""
    cos, sin = rope_cos_sin(positions.to(x.device), x.shape[-1], theta, dtype=x.dtype)
    return apply_rope(x, cos, sin)


def apply_rope_complex(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Interleaved RoPE as Meta's original code writes it: ``view_as_complex(x) · e^{j m θ}``.

    A third, independent spelling of the interleaved convention, used to check the real-valued one.
    ``x``: ``(batch, heads, seq, head_dim)``; ``positions``: ``(seq,)``.
    """
    inv_freq = rope_inv_freq(x.shape[-1], theta, device=x.device)
    rotation = torch.polar(torch.ones(len(positions), len(inv_freq), device=x.device),
                           positions.to(torch.float32)[:, None] * inv_freq)  # e^{j m θ_i}, (seq, d/2)
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(z * rotation).flatten(-2).to(x.dtype)


def interleaved_to_half_permutation(head_dim: int) -> torch.Tensor:
    """Index ``p`` with ``x_half = x_interleaved[..., p]``: evens first, then odds.

    Pair ``i`` of the interleaved layout, ``(x[2i], x[2i+1])``, lands at ``(i, i + d/2)``, which is
    pair ``i`` of the half layout. Hence, for every ``x`` and position,
    ``rope_half(x[..., p]) == rope_interleaved(x)[..., p]``.
    """
    _check_head_dim(head_dim)
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


def rope_convention_gap(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> float:
    """Max ``|rope_half(x[..., p]) − rope_interleaved(x)[..., p]|`` over all entries (≈ 0: same rotation).

    ``x``: ``(batch, heads, seq, head_dim)``; ``positions``: ``(seq,)``.
    """
    d = x.shape[-1]
    perm = interleaved_to_half_permutation(d).to(x.device)
    cos_h, sin_h = rope_cos_sin(positions, d, theta, convention="half", dtype=x.dtype)
    cos_i, sin_i = rope_cos_sin(positions, d, theta, convention="interleaved", dtype=x.dtype)
    half = apply_rope(x[..., perm], cos_h, sin_h, convention="half")
    interleaved = apply_rope(x, cos_i, sin_i, convention="interleaved")[..., perm]
    return (half - interleaved).abs().max().item()


def rope_scores_by_offset(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0,
                          *, convention: str = "half") -> torch.Tensor:
    """Attention score ``⟨RoPE(q, m), RoPE(k, n)⟩`` for the *same* vectors ``q``, ``k`` (shape ``(d,)``)
    placed at every pair of positions: returns a ``(len(positions), len(positions))`` matrix whose
    entry ``[m, n]`` depends only on ``positions[m] − positions[n]`` (constant along diagonals).
    """
    checks.tensor("q", q, ndim=1, shape="(head_dim,)")
    checks.same_shape(q=q, k=k)
    d, s = q.shape[0], len(positions)
    cos, sin = rope_cos_sin(positions, d, theta, convention=convention, dtype=q.dtype)
    qr = apply_rope(q.expand(1, 1, s, d), cos, sin, convention=convention)[0, 0]
    kr = apply_rope(k.expand(1, 1, s, d), cos, sin, convention=convention)[0, 0]
    return qr @ kr.T
