"""Causal self-attention with multi-head (MHA), grouped-query (GQA) and multi-query (MQA) heads.

With ``H`` query heads and ``H_kv`` key/value heads (``H % H_kv == 0``), query head ``h`` reads
key/value head ``h // (H / H_kv)``:

* MHA: ``H_kv = H`` (one K/V per query head, the original Transformer),
* GQA: ``1 < H_kv < H`` (LLaMA-2 70B: 64 query heads share 8 K/V heads),
* MQA: ``H_kv = 1`` (all query heads share one K/V head).

Per head: ``softmax(Q Kᵀ / sqrt(d) + M) V`` with the causal mask ``M[i, j] = −∞ for j > i``.
Only K and V are cached during generation, so the KV cache shrinks by ``H / H_kv``
(:func:`kv_cache_bytes_per_token`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import checks
from course_utils.arch.rope import apply_rope

ATTENTION_KINDS = ("mha", "gqa", "mqa")

# Published shapes (from the models' config.json files) used to size KV caches.
MODEL_SHAPES: dict[str, dict[str, int]] = {
    "LLaMA-2 70B": {"num_layers": 80, "num_heads": 64, "num_kv_heads": 8, "head_dim": 128},
    "Mistral 7B": {"num_layers": 32, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
}


def check_head_counts(num_heads: int, num_kv_heads: int) -> int:
    """Validate the head counts and return the group size ``num_heads // num_kv_heads``."""
    checks.positive_int(num_heads=num_heads, num_kv_heads=num_kv_heads)
    checks.divisible("num_heads", num_heads, num_kv_heads, divisor_name="num_kv_heads",
                     why="each key/value head serves a whole group of query heads")
    return num_heads // num_kv_heads


def attention_kind(num_heads: int, num_kv_heads: int) -> str:
    """``"mha"``, ``"gqa"`` or ``"mqa"`` for these head counts."""
    check_head_counts(num_heads, num_kv_heads)
    if num_kv_heads == num_heads:
        return "mha"
    return "mqa" if num_kv_heads == 1 else "gqa"


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(batch, H_kv, seq, d) → (batch, H_kv·n_rep, seq, d)``: each K/V head repeated for its group.

    Equal to ``x.repeat_interleave(n_rep, dim=1)``; written with ``expand`` so no copy is made
    until the final reshape.
    """
    checks.tensor("x", x, ndim=4, shape="(batch, kv_heads, seq, head_dim)")
    checks.positive_int(n_rep=n_rep)
    if n_rep == 1:
        return x
    b, h_kv, s, d = x.shape
    return x[:, :, None].expand(b, h_kv, n_rep, s, d).reshape(b, h_kv * n_rep, s, d)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Check the shapes and return the group size ``H / H_kv``."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        checks.tensor(name, t, ndim=4, shape="(batch, heads, seq, head_dim)")
    checks.same_shape(k=k, v=v)
    if q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch, seq and head_dim")
    return check_head_counts(q.shape[1], k.shape[1])


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal grouped-query attention through ``F.scaled_dot_product_attention``.

    ``q``: ``(batch, H, seq, d)``; ``k``, ``v``: ``(batch, H_kv, seq, d)``; returns ``(batch, H, seq, d)``.
    """
    n_rep = _check_qkv(q, k, v)
    return F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal=True)


def causal_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same as :func:`causal_attention`, spelled out: masked scores, softmax in float32, weighted sum."""
    n_rep = _check_qkv(q, k, v)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    seq = q.shape[2]
    scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
    future = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1).to(v.dtype)
    return weights @ v


class GroupedQueryAttention(nn.Module):
    """LLaMA's self-attention: bias-free Q/K/V/O projections, RoPE on Q and K, causal GQA.

    Parameter names follow transformers' ``LlamaAttention`` (``q_proj``, ``k_proj``, ``v_proj``,
    ``o_proj``) so weights copy over one to one (:meth:`from_hf`).
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, *, rope_convention: str = "half") -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        self.num_kv_groups = check_head_counts(num_heads, num_kv_heads)
        if head_dim is None:
            checks.divisible("hidden_size", hidden_size, num_heads, divisor_name="num_heads", why="or pass head_dim")
            head_dim = hidden_size // num_heads
        checks.divisible("head_dim", head_dim, 2, why="RoPE rotates pairs of dimensions")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.rope_convention = rope_convention
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)

    @property
    def kind(self) -> str:
        return attention_kind(self.num_heads, self.num_kv_heads)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, seq, hidden)``; ``cos``/``sin``: ``(seq, head_dim)`` or ``(batch, seq, head_dim)``."""
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin, convention=self.rope_convention)
        k = apply_rope(k, cos, sin, convention=self.rope_convention)
        out = causal_attention(q, k, v)  # (b, H, s, d)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim))

    @classmethod
    def from_hf(cls, attn: nn.Module) -> GroupedQueryAttention:
        """Copy a transformers ``LlamaAttention`` (bias-free projections)."""
        cfg = attn.config
        if getattr(cfg, "attention_bias", False):
            raise ValueError("attention_bias=True is not supported: this attention has no biases")
        hidden = attn.q_proj.in_features
        ours = cls(hidden, cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim)
        ours.load_state_dict(attn.state_dict())
        return ours.to(device=attn.q_proj.weight.device, dtype=attn.q_proj.weight.dtype)


def kv_cache_bytes_per_token(num_layers: int, num_heads: int, head_dim: int, *, attention: str = "gqa",
                             num_kv_heads: int | None = None, bytes_per_value: float = 2) -> float:
    """Bytes of KV cache one token occupies: ``2 (K and V) · layers · H_kv · head_dim · bytes``.

    ``attention="mha"`` uses ``H_kv = num_heads``, ``"mqa"`` uses ``H_kv = 1`` and ``"gqa"`` needs
    ``num_kv_heads``. ``bytes_per_value`` is 2 for fp16/bf16, 1 for an int8 cache.
    """
    checks.one_of("attention", attention, ATTENTION_KINDS)
    checks.positive_int(num_layers=num_layers, num_heads=num_heads, head_dim=head_dim)
    checks.positive_number(bytes_per_value=bytes_per_value)
    if attention == "mha":
        kv = num_heads
    elif attention == "mqa":
        kv = 1
    else:
        if num_kv_heads is None:
            raise ValueError("attention='gqa' needs num_kv_heads")
        check_head_counts(num_heads, num_kv_heads)
        kv = num_kv_heads
    return 2 * num_layers * kv * head_dim * bytes_per_value
