"""A LLaMA-style decoder small enough to read in one sitting, and to train on a laptop.

    logits = W_out · RMSNorm(Block_L(... Block_1(E[input_ids]) ...))
    Block(x): h = x + GQA(RMSNorm(x), RoPE);  y = h + SwiGLU(RMSNorm(h))

Module and parameter names follow transformers' ``LlamaForCausalLM`` (minus its ``model.``
prefix), so :meth:`TinyLlama.from_hf` copies a transformers checkpoint one tensor at a time and
the logits agree to float32 rounding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from course_utils import checks
from course_utils.arch.attention import check_head_counts
from course_utils.arch.blocks import DecoderBlock, _check_hf_llama_config
from course_utils.arch.layers import RMSNorm
from course_utils.arch.rope import rope_cos_sin


@dataclass
class TinyLlamaConfig:
    """Shape of a :class:`TinyLlama`; field names and defaults as transformers' ``LlamaConfig``.

    ``head_dim`` defaults to ``hidden_size // num_attention_heads``; ``num_key_value_heads``
    defaults to ``num_attention_heads`` (multi-head attention).
    """

    vocab_size: int = 32000
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    head_dim: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        checks.positive_int(**{name: getattr(self, name) for name in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings")})
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        check_head_counts(self.num_attention_heads, self.num_key_value_heads)
        if self.head_dim is None:
            checks.divisible("hidden_size", self.hidden_size, self.num_attention_heads,
                             divisor_name="num_attention_heads", why="or set head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        checks.divisible("head_dim", self.head_dim, 2, why="RoPE rotates pairs of dimensions")
        checks.positive_number(rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps)


def _run_layers(layers: nn.ModuleList, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x, cos, sin)
    return x


class TinyLlama(nn.Module):
    """LLaMA-style causal LM: token embedding, pre-norm GQA/SwiGLU blocks with RoPE, final RMSNorm, LM head."""

    def __init__(self, config: TinyLlamaConfig) -> None:
        super().__init__()
        checks.instance("config", config, TinyLlamaConfig)
        self.config = config
        c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(
            DecoderBlock(c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads,
                         c.head_dim, rms_norm_eps=c.rms_norm_eps)
            for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.checkpoint_segment = 0  # layers per checkpointed segment; 0: off

    def gradient_checkpointing_enable(self, segment_size: int = 1) -> None:
        """Recompute activations in backward instead of storing them (chapter 04): the layers run in
        segments of ``segment_size`` under ``torch.utils.checkpoint`` and only each segment's input
        is kept. ``segment_size ≈ √num_layers`` minimises the peak (Chen et al., 2016)."""
        if isinstance(segment_size, bool) or not isinstance(segment_size, int) or segment_size < 1:
            raise ValueError(f"segment_size must be a positive int, got {segment_size!r}")
        self.checkpoint_segment = segment_size

    def gradient_checkpointing_disable(self) -> None:
        self.checkpoint_segment = 0

    def _init_weights(self, module: nn.Module) -> None:
        """LLaMA's init: every matrix ~ N(0, initializer_range²), norms' gains = 1."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, seq)`` token ids → ``(batch, seq, vocab_size)`` next-token logits."""
        checks.tensor("input_ids", input_ids, ndim=2, floating=False, shape="(batch, seq)")
        seq = input_ids.shape[1]
        if seq > self.config.max_position_embeddings:
            raise ValueError(f"input_ids holds {seq} positions, more than max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(torch.arange(seq, device=input_ids.device), self.config.head_dim,
                                self.config.rope_theta, dtype=x.dtype)
        k = self.checkpoint_segment
        if k and torch.is_grad_enabled():
            for start in range(0, len(self.layers), k):
                x = checkpoint(_run_layers, self.layers[start:start + k], x, cos, sin, use_reentrant=False)
        else:
            x = _run_layers(self.layers, x, cos, sin)
        return self.lm_head(self.norm(x))

    def num_parameters(self, exclude_embeddings: bool = True) -> int:
        """Number of parameters; with ``exclude_embeddings`` the token embedding and the LM head are
        left out (Kaplan et al.'s non-embedding ``N ≈ 12·L·d²`` for a classic block)."""
        skip = {id(self.embed_tokens.weight), id(self.lm_head.weight)} if exclude_embeddings else set()
        seen: set[int] = set()
        total = 0
        for p in self.parameters():  # parameters() already yields a tied weight once
            if id(p) in skip or id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    @classmethod
    def from_hf(cls, model: nn.Module) -> TinyLlama:
        """Build a TinyLlama holding the weights of a transformers ``LlamaForCausalLM``.

        Raises:
            ValueError: the model uses a feature this implementation leaves out (biases,
                another activation, scaled RoPE).
        """
        hf = model.config
        _check_hf_llama_config(hf)
        rope = getattr(hf, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
        config = TinyLlamaConfig(
            vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
            num_hidden_layers=hf.num_hidden_layers, num_attention_heads=hf.num_attention_heads,
            num_key_value_heads=hf.num_key_value_heads, max_position_embeddings=hf.max_position_embeddings,
            rope_theta=float(theta), rms_norm_eps=hf.rms_norm_eps,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
            initializer_range=getattr(hf, "initializer_range", 0.02))
        ours = cls(config)
        state = {}
        for name, tensor in model.state_dict().items():
            if name.startswith("model."):
                name = name[len("model."):]
            if "rotary_emb" in name:
                continue
            state[name] = tensor
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
            missing, unexpected = ours.load_state_dict(state, strict=False)
            missing = [m for m in missing if m != "lm_head.weight"]
        else:
            missing, unexpected = ours.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not match a Llama checkpoint: missing {missing}, unexpected {unexpected}")
        weight = model.lm_head.weight
        return ours.to(device=weight.device, dtype=weight.dtype)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
