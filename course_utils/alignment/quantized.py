"""Quantized loads of the offline model, cached once quantized.

bitsandbytes quantizes weight by weight while ``from_pretrained`` loads them; on a 2-core CPU
that takes 20–50 s for SmolLM2-135M, while reloading the saved, already-quantized checkpoint
takes under a second and gives bit-identical outputs. :func:`load_quantized` therefore saves
the first CPU quantization under the course cache and reloads it afterwards. On CUDA, or for
any model other than the offline ones, it simply calls
:func:`course_utils.models.load_causal_lm`.

Memory rule of thumb (syllabus, Module 18): weights need N × bytes/param — 4 (fp32),
2 (fp16/bf16), 1 (int8), 0.5 (int4/nf4) — plus what stays unquantized (embeddings, norms)
and the quantization constants (NF4 with double quantization: ≈ 0.127 bits/param more).
"""

from __future__ import annotations

from pathlib import Path

from course_utils import checks
from course_utils.models import OFFLINE_CAUSAL_LMS, QUANTIZATIONS, cached_folder, load_causal_lm
from course_utils.runtime import cache_dir, resolve_device


def load_quantized(name: str = "smollm2-135m-instruct", quantization: str = "nf4", device: str = "auto"):
    """``(model, tokenizer)`` loaded with bitsandbytes ``quantization`` (``"nf4"`` or ``"int8"``),
    from a cached pre-quantized checkpoint when running the offline model on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checks.one_of("quantization", quantization, QUANTIZATIONS)
    device = resolve_device(device)
    if device != "cpu" or name not in OFFLINE_CAUSAL_LMS:
        return load_causal_lm(name, device=device, quantization=quantization)

    def quantize(tmp: Path) -> None:
        model, tokenizer = load_causal_lm(name, device="cpu", quantization=quantization)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    target = cached_folder(cache_dir() / "models" / f"{name}-{quantization}", quantize)
    tokenizer = AutoTokenizer.from_pretrained(target)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(target, device_map={"": "cpu"})
    model.eval()
    return model, tokenizer
