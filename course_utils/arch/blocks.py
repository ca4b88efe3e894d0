"""Residual decoder blocks, pre-norm (LLaMA, GPT-2 onwards) and post-norm (the 2017 Transformer).

    pre-norm:   h = x + Attn(Norm(x));      y = h + FFN(Norm(h))
    post-norm:  h = Norm(x + Attn(x));      y = Norm(h + FFN(h))

In the pre-norm block the residual stream ``x → y`` is an identity path plus additions, and
the final norm divides by the stream's growing scale, so at initialisation the gradient of the
last layer shrinks like ``1/sqrt(L)`` with depth ``L`` and the total gradient norm stays bounded.
In the post-norm block every sublayer output passes through a normalisation; the last layer's
gradient does not shrink with depth, so the total gradient norm grows with ``L`` (Xiong et al.,
2020, "On Layer Normalization in the Transformer Architecture", Theorem 1). Large gradients at
initialisation are why post-norm needs learning-rate warm-up while pre-norm trains stably at
depth. :func:`gradient_norms_by_depth` measures it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import checks
from course_utils.arch.attention import GroupedQueryAttention
from course_utils.arch.layers import RMSNorm, SwiGLU
from course_utils.arch.rope import rope_cos_sin

NORM_POSITIONS = ("pre", "post")
NORM_TYPES = ("rmsnorm", "layernorm")


def make_norm(norm_type: str, hidden_size: int, eps: float = 1e-6) -> nn.Module:
    """``RMSNorm`` or ``nn.LayerNorm`` by name."""
    if norm_type == "rmsnorm":
        return RMSNorm(hidden_size, eps)
    if norm_type == "layernorm":
        return nn.LayerNorm(hidden_size, eps=eps)
    raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")


class DecoderBlock(nn.Module):
    """Attention + SwiGLU with residual connections; LLaMA's block when ``norm_position="pre"``.

    Submodule names follow transformers' ``LlamaDecoderLayer`` (``self_attn``, ``mlp``,
    ``input_layernorm``, ``post_attention_layernorm``).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, *, rms_norm_eps: float = 1e-6, norm_position: str = "pre",
                 norm_type: str = "rmsnorm") -> None:
        super().__init__()
        checks.one_of("norm_position", norm_position, NORM_POSITIONS)
        self.norm_position = norm_position
        self.self_attn = GroupedQueryAttention(hidden_size, num_heads, num_kv_heads, head_dim)
        self.mlp = SwiGLU(hidden_size, intermediate_size)
        self.input_layernorm = make_norm(norm_type, hidden_size, rms_norm_eps)
        self.post_attention_layernorm = make_norm(norm_type, hidden_size, rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.norm_position == "pre":
            h = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return h + self.mlp(self.post_attention_layernorm(h))
        h = self.input_layernorm(x + self.self_attn(x, cos, sin))
        return self.post_attention_layernorm(h + self.mlp(h))

    @classmethod
    def from_hf(cls, layer: nn.Module) -> DecoderBlock:
        """Copy a transformers ``LlamaDecoderLayer`` (pre-norm, RMSNorm, SiLU-gated MLP, no biases)."""
        attn = layer.self_attn
        cfg = attn.config
        _check_hf_llama_config(cfg)
        ours = cls(cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                   attn.head_dim, rms_norm_eps=cfg.rms_norm_eps)
        ours.load_state_dict(layer.state_dict())
        return ours.to(device=attn.q_proj.weight.device, dtype=attn.q_proj.weight.dtype)


def _check_hf_llama_config(cfg) -> None:
    problems = []
    if getattr(cfg, "attention_bias", False):
        problems.append("attention_bias=True")
    if getattr(cfg, "mlp_bias", False):
        problems.append("mlp_bias=True")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={cfg.hidden_act!r}")
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type={rope.get('rope_type')!r}")
    if problems:
        raise ValueError("unsupported Llama config (this implementation is the plain LLaMA recipe): "
                         + ", ".join(problems))


class BlockStack(nn.Module):
    """``num_layers`` decoder blocks between an input projection and an LM head (for depth studies).

    Pre-norm stacks get a final norm before the head (as LLaMA has); post-norm stacks already end
    with one. Linear layers get Xavier-normal initialisation, the setting of Xiong et al.
    """

    def __init__(self, num_layers: int, hidden_size: int = 64, num_heads: int = 4, vocab_size: int = 128, *,
                 norm_position: str = "pre", norm_type: str = "layernorm") -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.blocks = nn.ModuleList(
            DecoderBlock(hidden_size, 4 * hidden_size, num_heads, norm_position=norm_position, norm_type=norm_type)
            for _ in range(num_layers))
        self.final_norm = make_norm(norm_type, hidden_size) if norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.head_dim = hidden_size // num_heads
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cos, sin = rope_cos_sin(torch.arange(tokens.shape[1], device=tokens.device), self.head_dim,
                                dtype=self.embed.weight.dtype)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.final_norm(x))


def gradient_norms_by_depth(num_layers: int, norm_position: str, *, hidden_size: int = 64, num_heads: int = 4,
                            vocab_size: int = 128, batch_size: int = 8, seq_len: int = 32, norm_type: str = "layernorm",
                            seed: int = 0) -> list[float]:
    """Gradient norm of each block's parameters at initialisation, input layer first.

    Builds a :class:`BlockStack` with Xavier initialisation (no depth-scaled init, as in
    Xiong et al.), runs one batch of random tokens with a next-token cross-entropy loss, and
    returns ``‖∂L/∂θ_l‖₂`` for every block ``l``.
    """
    checks.positive_int(num_layers=num_layers)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = BlockStack(num_layers, hidden_size, num_heads, vocab_size, norm_position=norm_position,
                       norm_type=norm_type)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=gen)
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.reshape(-1, vocab_size), tokens[:, 1:].reshape(-1)).backward()
    return [torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in block.parameters()])).item()
            for block in model.blocks]
