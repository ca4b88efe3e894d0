"""Inference optimization (chapter 10): quantization from scratch (integer absmax/zero-point,
NF4, GPTQ, AWQ, GGUF), perplexity, memory estimation, KV-cache generation, speculative decoding,
and two production pitfalls.

Each piece is checked against the library a user would otherwise call (bitsandbytes, gguf,
transformers) in ``tests/unit/test_inference.py``.
"""

from course_utils.inference.awq import awq_search_scale
from course_utils.inference.gguf_file import (
    GGUFFile,
    TensorInfo,
    bits_per_weight,
    dequantize_q4_1,
    gguf_requantize,
    read_gguf,
    shipped_gguf_path,
)
from course_utils.inference.gptq import (
    GPTQResult,
    gptq_fake_quantize,
    gptq_quantize_weight,
    hessian_from_inputs,
    layer_output_error,
)
from course_utils.inference.intquant import (
    IntQuantized,
    absmax_dequantize,
    absmax_quantize,
    dequantize,
    fake_quantize,
    quantization_error,
    quantize_absmax,
    quantize_zeropoint,
    storage_bits_per_weight,
    zeropoint_dequantize,
    zeropoint_params,
    zeropoint_quantize,
    zeropoint_round,
)
from course_utils.inference.kv_cache import eos_ids, greedy_generate
from course_utils.inference.memory import (
    LLAMA2,
    ModelShape,
    activation_bytes,
    generate_extra_bytes,
    inference_memory,
    kv_cache_bytes,
    peak_allocated_bytes,
    rule_of_thumb_bytes,
    training_memory,
    weight_bytes,
)
from course_utils.inference.model_quant import (
    capture_first_layer_inputs,
    iter_linears,
    quantize_model_awq,
    quantize_model_gptq,
    quantize_model_rtn,
)
from course_utils.inference.nf4 import (
    NF4Quantized,
    dequantize_nf4,
    dynamic_codebook,
    nf4_codebook,
    nf4_dequantize,
    nf4_quantize,
    quantize_nf4,
)
from course_utils.inference.perplexity import calibration_ids, heldout_ids, perplexity
from course_utils.inference.pitfalls import (
    ContextLengthError,
    batch_vs_alone_logits,
    check_context,
    context_window,
)
from course_utils.inference.speculative import (
    ModelDraft,
    PromptLookupDraft,
    SpeculativeResult,
    accept_or_resample,
    self_draft,
    speculative_generate,
)
from course_utils.inference.variants import VARIANTS, build_variant, variant_bytes

__all__ = [
    "awq_search_scale",
    "GGUFFile", "TensorInfo", "bits_per_weight", "dequantize_q4_1", "gguf_requantize", "read_gguf", "shipped_gguf_path",
    "GPTQResult", "gptq_fake_quantize", "gptq_quantize_weight", "hessian_from_inputs", "layer_output_error",
    "IntQuantized", "absmax_dequantize", "absmax_quantize", "zeropoint_dequantize", "zeropoint_quantize", "dequantize", "fake_quantize", "quantization_error", "quantize_absmax", "quantize_zeropoint",
    "storage_bits_per_weight", "zeropoint_params", "zeropoint_round",
    "eos_ids", "greedy_generate",
    "LLAMA2", "ModelShape", "activation_bytes", "generate_extra_bytes", "inference_memory", "kv_cache_bytes", "peak_allocated_bytes",
    "rule_of_thumb_bytes", "training_memory", "weight_bytes",
    "capture_first_layer_inputs", "iter_linears", "quantize_model_awq", "quantize_model_gptq", "quantize_model_rtn",
    "NF4Quantized", "dequantize_nf4", "dynamic_codebook", "nf4_codebook", "quantize_nf4", "nf4_dequantize", "nf4_quantize",
    "calibration_ids", "heldout_ids", "perplexity",
    "ContextLengthError", "batch_vs_alone_logits", "check_context", "context_window",
    "VARIANTS", "build_variant", "variant_bytes",
    "ModelDraft", "PromptLookupDraft", "SpeculativeResult", "accept_or_resample", "self_draft", "speculative_generate",
]
