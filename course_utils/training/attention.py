"""FlashAttention's idea from scratch: online softmax and tiled attention (Dao et al., 2022).

**Online softmax** (Milakov & Gimelshein, 2018). ``softmax(x)_i = exp(x_i − m) / ℓ`` needs the
maximum ``m`` and the sum ``ℓ = Σ_j exp(x_j − m)``. Reading ``x`` one block at a time, keep a
running maximum and a running sum, and rescale the sum whenever the maximum grows:

    m_new = max(m, max(x_blk))
    ℓ_new = ℓ · exp(m − m_new) + Σ exp(x_blk − m_new)

**Tiled attention.** For each block of queries ``Q_i`` and each block of keys/values ``K_j, V_j``:

    S = Q_i K_jᵀ / √d                       (block_q × block_k: the only score tile in memory)
    m_new = max(m, rowmax(S));  P = exp(S − m_new)
    ℓ = ℓ · exp(m − m_new) + rowsum(P)
    O = O · exp(m − m_new) + P V_j
    at the end:  O = O / ℓ,  and the log-sum-exp  L = m + log ℓ  is kept for backward

The ``N × N`` score matrix is never stored: memory is ``O(N·d)`` for the output and the row
statistics plus one tile, against ``O(N²)`` for :func:`naive_attention`. Backward (FlashAttention-2,
Dao 2023) recomputes each tile from ``Q, K, V`` and ``L`` instead of reading a stored matrix:

    P = exp(S − L);  dV_j += Pᵀ dO_i;  dP = dO_i V_jᵀ;  D_i = rowsum(dO_i ∘ O_i)
    dS = P ∘ (dP − D_i);  dQ_i += dS K_j / √d;  dK_j += dSᵀ Q_i / √d

On a GPU the tile lives in on-chip SRAM and the saving is in HBM traffic as well as memory; here
the same algorithm runs in PyTorch on any device and its memory is measured.
"""

from __future__ import annotations

import math

import torch

from course_utils import checks


def online_softmax(x: torch.Tensor, block_size: int = 128) -> torch.Tensor:
    """Softmax over the last dimension, reading ``x`` in blocks of ``block_size`` with a running
    maximum and a rescaled running sum (one pass for the statistics, one to normalise)."""
    checks.tensor("x", x, floating=True)
    checks.positive_int(block_size=block_size)
    m = torch.full(x.shape[:-1] + (1,), float("-inf"), dtype=x.dtype, device=x.device)
    total = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block_size):
        blk = x[..., start:start + block_size]
        m_new = torch.maximum(m, blk.amax(dim=-1, keepdim=True))
        total = total * torch.exp(m - m_new) + torch.exp(blk - m_new).sum(dim=-1, keepdim=True)
        m = m_new
    return torch.exp(x - m) / total


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """``softmax(Q Kᵀ/√d + M) V`` with the whole ``(…, N, N)`` score matrix materialised."""
    _check_qkv(q, k, v)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        n_q, n_k = scores.shape[-2:]
        future = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).triu(n_k - n_q + 1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    checks.tensor("q", q, ndim=(2, 3, 4), floating=True, shape="(..., seq, head_dim)")
    checks.tensor("k", k, ndim=q.ndim, floating=True)
    checks.tensor("v", v, ndim=q.ndim, floating=True)
    checks.same_shape(k=k, v=v)
    if q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on leading dims and head_dim")


def _tiles(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def tiled_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                            block_q: int = 128, block_k: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention one ``block_q × block_k`` tile at a time with online softmax (module docstring).

    Returns ``(O, L)``: the output ``(…, N_q, d)`` and the row log-sum-exp ``(…, N_q)`` backward needs.
    Causal masking aligns the last query with the last key; tiles entirely in the future are skipped.
    """
    _check_qkv(q, k, v)
    checks.positive_int(block_q=block_q, block_k=block_k)
    n_q, n_k, scale = q.shape[-2], k.shape[-2], 1 / math.sqrt(q.shape[-1])
    offset = n_k - n_q  # query i sees keys j <= i + offset
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    for qs, qe in _tiles(n_q, block_q):
        q_i = q[..., qs:qe, :].float()
        m = torch.full(q_i.shape[:-1] + (1,), float("-inf"), device=q.device)
        total = torch.zeros_like(m)
        acc = torch.zeros_like(q_i)
        for ks, ke in _tiles(n_k, block_k):
            if causal and ks > qe - 1 + offset:
                break  # this tile and the ones after it are in every query's future
            s = (q_i @ k[..., ks:ke, :].float().transpose(-1, -2)) * scale
            if causal and ke - 1 > qs + offset:
                rows = torch.arange(qs, qe, device=q.device)[:, None] + offset
                s = s.masked_fill(torch.arange(ks, ke, device=q.device)[None, :] > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            rescale = torch.exp(m - m_new)
            total = total * rescale + p.sum(dim=-1, keepdim=True)
            acc = acc * rescale + p @ v[..., ks:ke, :].float()
            m = m_new
        out[..., qs:qe, :] = (acc / total).to(q.dtype)
        lse[..., qs:qe] = (m + torch.log(total)).squeeze(-1)
    return out, lse


def tiled_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                             grad_out: torch.Tensor, *, causal: bool = False, block_q: int = 128,
                             block_k: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(dQ, dK, dV)`` by recomputing each score tile from ``Q, K`` and the saved
    log-sum-exp ``L`` (FlashAttention-2's backward; formulas in the module docstring)."""
    n_q, n_k, scale = q.shape[-2], k.shape[-2], 1 / math.sqrt(q.shape[-1])
    offset = n_k - n_q
    dq = torch.zeros_like(q, dtype=torch.float32)
    dk = torch.zeros_like(k, dtype=torch.float32)
    dv = torch.zeros_like(v, dtype=torch.float32)
    d_rows = (grad_out.float() * out.float()).sum(dim=-1)  # D_i = rowsum(dO ∘ O)
    for ks, ke in _tiles(n_k, block_k):
        k_j, v_j = k[..., ks:ke, :].float(), v[..., ks:ke, :].float()
        for qs, qe in _tiles(n_q, block_q):
            if causal and ks > qe - 1 + offset:
                continue
            q_i, do_i = q[..., qs:qe, :].float(), grad_out[..., qs:qe, :].float()
            s = (q_i @ k_j.transpose(-1, -2)) * scale
            if causal and ke - 1 > qs + offset:
                rows = torch.arange(qs, qe, device=q.device)[:, None] + offset
                s = s.masked_fill(torch.arange(ks, ke, device=q.device)[None, :] > rows, float("-inf"))
            p = torch.exp(s - lse[..., qs:qe, None])
            dv[..., ks:ke, :] += p.transpose(-1, -2) @ do_i
            ds = p * (do_i @ v_j.transpose(-1, -2) - d_rows[..., qs:qe, None])
            dq[..., qs:qe, :] += (ds @ k_j) * scale
            dk[..., ks:ke, :] += (ds.transpose(-1, -2) @ q_i) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, block_q, block_k):
        out, lse = tiled_attention_forward(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
        ctx.save_for_backward(q, k, v, out, lse)  # O(N·d): no N × N matrix is kept
        ctx.opts = {"causal": causal, "block_q": block_q, "block_k": block_k}
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = tiled_attention_backward(q, k, v, out, lse, grad_out, **ctx.opts)
        return dq, dk, dv, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    block_q: int = 128, block_k: int = 128) -> torch.Tensor:
    """Exact attention in tiles (forward and backward), equal to ``F.scaled_dot_product_attention``
    up to float rounding, without ever holding the ``N × N`` score matrix. ``q``: ``(…, N_q, d)``,
    ``k``, ``v``: ``(…, N_k, d)``."""
    _check_qkv(q, k, v)
    checks.positive_int(block_q=block_q, block_k=block_k)
    return _TiledAttention.apply(q, k, v, bool(causal), block_q, block_k)


def _implementations(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, block: int) -> dict:
    """Naive, SDPA forced to its flash kernel (a CPU one exists), and tiled attention on the same inputs."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def flash() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return {"naive": lambda: naive_attention(q, k, v, causal=causal), "sdpa_flash": flash,
            "tiled": lambda: tiled_attention(q, k, v, causal=causal, block_q=block, block_k=block)}


def attention_peak_memory(seq_lens: list[int], *, head_dim: int = 64, num_heads: int = 1, block: int = 128,
                          causal: bool = True, backward: bool = False, device: str = "cpu",
                          seed: int = 0) -> list[dict[str, float]]:
    """Peak bytes allocated by :func:`naive_attention` and :func:`tiled_attention` (forward, or
    forward + backward) at each sequence length, measured with :class:`PeakMemory` on the same
    ``(1, num_heads, N, head_dim)`` inputs. The inputs themselves are not counted."""
    from course_utils.training.memory import peak_memory

    rows = []
    gen = torch.Generator().manual_seed(seed)
    for n in seq_lens:
        checks.positive_int(seq_len=n)
        q, k, v = (torch.randn(1, num_heads, n, head_dim, generator=gen).to(device).requires_grad_(backward)
                   for _ in range(3))
        row: dict[str, float] = {"seq_len": n}
        impls = _implementations(q, k, v, causal, block)
        for name in ("naive", "tiled"):
            run = (lambda f=impls[name]: f().sum().backward()) if backward else impls[name]
            _, row[f"{name}_bytes"] = peak_memory(run)
        row["score_matrix_bytes"] = num_heads * n * n * q.element_size()
        rows.append(row)
    return rows


def time_attention(seq_lens: list[int], *, head_dim: int = 64, num_heads: int = 8, repeats: int = 3,
                   causal: bool = True, device: str = "cpu", seed: int = 0) -> list[dict[str, float]]:
    """Median forward seconds of naive attention, SDPA forced to its flash kernel
    (``sdpa_kernel(SDPBackend.FLASH_ATTENTION)``; a CPU kernel exists) and :func:`tiled_attention`."""
    import statistics
    import time

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for n in seq_lens:
        q, k, v = (torch.randn(1, num_heads, n, head_dim, generator=gen).to(device) for _ in range(3))
        row: dict[str, float] = {"seq_len": n}
        for name, fn in _implementations(q, k, v, causal, 128).items():
            times = []
            for _ in range(repeats + 1):
                start = time.perf_counter()
                fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            row[f"{name}_seconds"] = statistics.median(times[1:])
        rows.append(row)
    return rows
