"""The quantized variants of one model that chapter 10 compares, built the same way for the
notebook's quality table and for ``scripts/bench_inference.py``.

Each variant is a full model whose decoder linears hold dequantized weights (except the
bitsandbytes ones, which run bitsandbytes' own layers), with its size in bytes from
:func:`course_utils.inference.memory.weight_bytes`. The offline SmolLM2 *is* a Q4_1 GGUF
dequantized to fp32, so "fp32" and "GGUF Q4_1 (shipped)" are the same weights; every other
variant re-quantizes those weights.
"""

from __future__ import annotations

import copy

import torch

from course_utils import checks
from course_utils.inference.gguf_file import gguf_requantize
from course_utils.inference.memory import ModelShape, weight_bytes
from course_utils.inference.model_quant import (
    iter_linears,
    quantize_model_awq,
    quantize_model_gptq,
    quantize_model_rtn,
)
from course_utils.inference.nf4 import dequantize_nf4, quantize_nf4

# name → (weight_bytes precision for the linears, embedding precision or None for fp32)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "fp32": ("fp32", None),
    "bf16": ("bf16", None),
    "int8 (bitsandbytes)": ("int8", None),
    "NF4 (bitsandbytes)": ("nf4", None),
    "NF4 (ours)": ("nf4", None),
    "RTN-4 g128": ("int4-g128", None),
    "GPTQ-4 g128": ("int4-g128", None),
    "AWQ-4 g128": ("int4-g128", None),
    "RTN-3 g128": ("int3-g128", None),
    "GPTQ-3 g128": ("int3-g128", None),
    "GGUF Q8_0": ("Q8_0", "Q8_0"),
    "GGUF Q4_1 (shipped)": ("Q4_1", "Q8_0"),
    "GGUF Q4_0": ("Q4_0", "Q8_0"),
}


def variant_bytes(shape: ModelShape, name: str) -> float:
    """Estimated weight bytes of a variant (norms and non-GGUF embeddings in fp32, as loaded on CPU)."""
    checks.one_of("name", name, VARIANTS)
    precision, embedding = VARIANTS[name]
    return weight_bytes(shape, precision, keep_dtype="fp32", embedding_precision=embedding)


@torch.no_grad()
def build_variant(name: str, base, calib_ids: torch.Tensor | None = None, *, model_name: str = "smollm2-135m-instruct",
                  n_layers: int | None = None, progress: bool = False):
    """A new model: ``base`` (fp32, left untouched) quantized as ``name`` (a key of :data:`VARIANTS`).
    GPTQ/AWQ need ``calib_ids``; bitsandbytes variants are loaded from ``model_name`` (CPU cache)."""
    checks.one_of("name", name, VARIANTS)
    if name in ("int8 (bitsandbytes)", "NF4 (bitsandbytes)"):
        from course_utils.alignment.quantized import load_quantized

        return load_quantized(model_name, "int8" if name.startswith("int8") else "nf4", device=str(base.device))[0]
    model = copy.deepcopy(base)
    if name == "bf16":
        return model.to(torch.bfloat16)
    bits = 3 if "-3" in name else 4
    if name.startswith(("GPTQ", "AWQ")) and calib_ids is None:
        raise ValueError(f"{name} needs calib_ids (calibration token ids)")
    if name.startswith("RTN"):
        quantize_model_rtn(model, bits, 128)
    elif name.startswith("GPTQ"):
        quantize_model_gptq(model, calib_ids, bits, 128, n_layers=n_layers, progress=progress)
    elif name.startswith("AWQ"):
        quantize_model_awq(model, calib_ids, bits, 128, n_layers=n_layers, progress=progress)
    elif name == "NF4 (ours)":
        for _, linear in iter_linears(model):
            linear.weight.copy_(dequantize_nf4(quantize_nf4(linear.weight)))
    elif name in ("GGUF Q8_0", "GGUF Q4_0"):
        for _, linear in iter_linears(model):
            w_hat, _ = gguf_requantize(linear.weight.cpu().numpy(), name.split()[-1])
            linear.weight.copy_(torch.from_numpy(w_hat))
    return model
