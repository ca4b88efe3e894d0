"""Modern decoder architectures (chapter 02) and mixture of experts (chapter 03, ``arch.moe``)."""

from course_utils.arch.attention import (
    MODEL_SHAPES,
    GroupedQueryAttention,
    attention_kind,
    causal_attention,
    causal_attention_reference,
    kv_cache_bytes_per_token,
    repeat_kv,
)
from course_utils.arch.blocks import BlockStack, DecoderBlock, gradient_norms_by_depth
from course_utils.arch.layers import RMSNorm, SwiGLU
from course_utils.arch.llama import TinyLlama, TinyLlamaConfig
from course_utils.arch.rope import (
    apply_rope,
    apply_rope_at,
    apply_rope_complex,
    interleaved_to_half_permutation,
    rope_convention_gap,
    rope_cos_sin,
    rope_inv_freq,
    rope_scores_by_offset,
    rotate_half,
    rotate_interleaved,
)

__all__ = [
    "MODEL_SHAPES", "BlockStack", "DecoderBlock", "GroupedQueryAttention", "RMSNorm", "SwiGLU", "TinyLlama",
    "TinyLlamaConfig", "apply_rope", "apply_rope_at", "apply_rope_complex", "attention_kind", "causal_attention",
    "causal_attention_reference", "gradient_norms_by_depth", "interleaved_to_half_permutation",
    "kv_cache_bytes_per_token", "repeat_kv", "rope_convention_gap", "rope_cos_sin", "rope_inv_freq",
    "rope_scores_by_offset", "rotate_half", "rotate_interleaved",
]
