"""A paged KV cache and attention that reads keys and values through block tables, plus a LLaMA
forward pass over a flat batch of tokens from many sequences (prefill chunks and decodes mixed).

The cache of one layer is a flat array of ``num_blocks · B`` token slots, each holding the keys
(and, in a second array, the values) of one token: ``(num_slots, kv_heads, head_dim)``. A sequence
owns some blocks in any order (its block table); token ``i`` sits in slot
``table[i // B] · B + i % B``.

**Attention through the table** (here, in plain torch): for each query, gather the slots of its
sequence's first ``ctx`` tokens into a contiguous ``(ctx, kv_heads, head_dim)`` tensor, then
``softmax(q Kᵀ / sqrt(d) + M) V`` with ``M[i, j] = −∞`` unless ``j ≤ pos(i)`` (causal) and
``j < ctx``. Decoding requests (one query each) are gathered together, padded to the longest
context, and handled in one batched call; each prefill chunk gets its own call.

A fused kernel (vLLM's PagedAttention, FlashAttention's paged variant, FlashInfer) never builds
the gathered copy: each thread block walks the block table and loads one K/V block at a time
from the cache straight into on-chip memory, with an online softmax across blocks. That saves
writing and re-reading ``2 · ctx · kv_heads · head_dim`` values per sequence and layer, which
is the main cost of this plain-torch version at long contexts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_utils import checks

__all__ = ["PagedKVCache", "PagedLlama", "block_slots", "paged_attention"]


class PagedKVCache:
    """Keys and values of every layer in ``num_blocks`` blocks of ``block_size`` token slots.

    ``k[layer]`` and ``v[layer]`` have shape ``(num_blocks · block_size, kv_heads, head_dim)``.
    """

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        checks.positive_int(num_layers=num_layers, num_blocks=num_blocks, block_size=block_size,
                            num_kv_heads=num_kv_heads, head_dim=head_dim)
        self.num_blocks, self.block_size = num_blocks, block_size
        shape = (num_layers, num_blocks * block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def bytes_per_token(self) -> int:
        """``2 · layers · kv_heads · head_dim · bytes`` (keys and values of one token, all layers)."""
        layers, _, heads, dim = self.k.shape
        return 2 * layers * heads * dim * self.k.element_size()

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the keys/values ``(n, kv_heads, head_dim)`` of ``n`` tokens in their slots ``(n,)``."""
        self.k[layer, slots] = k
        self.v[layer, slots] = v

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write: copy block ``src`` into block ``dst`` in every layer."""
        b = self.block_size
        for src, dst in copies:
            self.k[:, dst * b:(dst + 1) * b] = self.k[:, src * b:(src + 1) * b]
            self.v[:, dst * b:(dst + 1) * b] = self.v[:, src * b:(src + 1) * b]


def block_slots(blocks: list[int], num_tokens: int, block_size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Flat slots ``(num_tokens,)`` of a sequence's first ``num_tokens`` tokens: ``table[i // B]·B + i % B``."""
    table = torch.tensor(blocks, dtype=torch.long, device=device)
    offsets = torch.arange(block_size, device=device)
    return (table[:, None] * block_size + offsets).flatten()[:num_tokens]


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor,
                    context_lens: torch.Tensor, query_positions: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Causal attention of ``B`` sequences whose keys/values sit in a paged cache.

    Args:
        q: queries ``(B, n_q, heads, head_dim)`` (RoPE already applied).
        k_cache, v_cache: one layer's cache ``(num_slots, kv_heads, head_dim)``; ``heads`` must be a
            multiple of ``kv_heads`` (grouped-query attention).
        slots: ``(B, max_ctx)`` cache slots of each sequence's tokens ``0 .. max_ctx − 1`` (entries
            at or past a sequence's ``context_lens`` are ignored; any valid slot may pad them).
        context_lens: ``(B,)`` how many tokens of each sequence are in the cache.
        query_positions: ``(B, n_q)`` the position of each query; it sees keys ``j ≤ position``.
        scale: ``1 / sqrt(head_dim)`` by default.

    Returns:
        ``(B, n_q, heads, head_dim)``.
    """
    checks.tensor("q", q, ndim=4, floating=True, shape="(batch, n_q, heads, head_dim)")
    checks.tensor("slots", slots, ndim=2, floating=False, shape="(batch, max_ctx)")
    if q.shape[2] % k_cache.shape[1]:
        raise ValueError(f"q has {q.shape[2]} heads, not a multiple of the cache's {k_cache.shape[1]} kv heads")
    keys = k_cache[slots].transpose(1, 2)  # (B, kv_heads, max_ctx, d): the gather a fused kernel avoids
    values = v_cache[slots].transpose(1, 2)
    j = torch.arange(slots.shape[1], device=q.device)
    visible = (j <= query_positions[:, :, None]) & (j < context_lens[:, None, None])  # (B, n_q, max_ctx)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=visible[:, None],
                                         scale=scale, enable_gqa=True)
    return out.transpose(1, 2)


class PagedLlama:
    """Runs a transformers LLaMA-architecture causal LM (its own modules and weights) over a flat
    batch of tokens, with K/V stored in a :class:`PagedKVCache`.

    Per layer, for the ``T`` tokens of the step (all sequences concatenated):
    ``h = x + W_o · Attn(RoPE(W_q·n), RoPE(W_k·n), W_v·n)`` with ``n = RMSNorm(x)``, the new keys
    and values written into their slots first, then ``x' = h + MLP(RMSNorm(h))``. Only the rows
    that sample a token go through the final norm and the LM head.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        inner = getattr(model, "model", None)
        if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
            raise TypeError("model must be a transformers LLaMA-style causal LM (model.model.layers, model.lm_head)")
        attn = inner.layers[0].self_attn
        if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
            raise TypeError("model's attention must have q_proj, k_proj, v_proj, o_proj (LLaMA layout)")
        cfg = model.config
        self.model = model
        self.inner = inner
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = attn.scaling
        self.dtype = model.lm_head.weight.dtype
        self.device = model.lm_head.weight.device

    def make_cache(self, num_blocks: int, block_size: int) -> PagedKVCache:
        return PagedKVCache(self.num_layers, num_blocks, block_size, self.num_kv_heads, self.head_dim,
                            dtype=self.dtype, device=self.device)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin  # x·cos + rotate_half(x)·sin

    @torch.inference_mode()
    def forward(self, cache: PagedKVCache, input_ids: torch.Tensor, positions: torch.Tensor,
                write_slots: torch.Tensor, groups: list[dict[str, torch.Tensor]],
                sample_rows: torch.Tensor) -> torch.Tensor:
        """One step over ``T`` flat tokens.

        Args:
            input_ids, positions, write_slots: ``(T,)`` token ids, their positions, their cache slots.
            groups: attention calls; each has ``rows`` (indices into the ``T`` tokens, ``B·n_q`` of
                them in order), ``slots``, ``context_lens`` and ``query_positions`` as in
                :func:`paged_attention`.
            sample_rows: indices of the tokens whose next-token logits are wanted.

        Returns:
            Logits ``(len(sample_rows), vocab)`` in float32.
        """
        x = self.inner.embed_tokens(input_ids)  # (T, hidden)
        cos, sin = self.inner.rotary_emb(x, positions[None])
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]  # (T, 1, d)
        T = input_ids.shape[0]
        for layer_idx, layer in enumerate(self.inner.layers):
            attn = layer.self_attn
            n = layer.input_layernorm(x)
            q = self._rope(attn.q_proj(n).view(T, self.num_heads, self.head_dim), cos, sin)
            k = self._rope(attn.k_proj(n).view(T, self.num_kv_heads, self.head_dim), cos, sin)
            v = attn.v_proj(n).view(T, self.num_kv_heads, self.head_dim)
            cache.write(layer_idx, write_slots, k, v)
            out = torch.empty_like(q)
            for g in groups:
                b, n_q = g["query_positions"].shape
                qg = q[g["rows"]].view(b, n_q, self.num_heads, self.head_dim)
                og = paged_attention(qg, cache.k[layer_idx], cache.v[layer_idx], g["slots"], g["context_lens"],
                                     g["query_positions"], self.scale)
                out[g["rows"]] = og.reshape(b * n_q, self.num_heads, self.head_dim)
            h = x + attn.o_proj(out.view(T, -1))
            x = h + layer.mlp(layer.post_attention_layernorm(h))
        last = self.inner.norm(x[sample_rows])
        return self.model.lm_head(last).float()
