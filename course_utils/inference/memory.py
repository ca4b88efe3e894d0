"""Memory estimation, before renting a GPU — and checked against measurements.

**Weights.** The syllabus's rule of thumb is ``N × bytes/param`` (4 fp32, 2 fp16/bf16, 1 int8,
0.5 int4). Real quantized checkpoints differ in two ways this estimator counts:

* only the decoder's linear layers are quantized; embeddings, the LM head and norms stay in the
  compute dtype (for a 135M model with a 49k vocabulary, the embedding is 21 % of all weights);
* the constants: bitsandbytes int8 stores one fp32 scale per output row; NF4 one 8-bit absmax per
  64 weights plus one fp32 per 256 absmaxes (double quantization, 0.127 bit/weight); a GPTQ/AWQ
  group of ``g`` weights stores a 16-bit scale and a ``b``-bit zero; GGUF blocks carry their own
  fp16 constants (Q4_1: 5 bits/weight, Q4_0: 4.5, Q8_0: 8.5).

**KV cache.** ``2 (K and V) × layers × kv_heads × head_dim × context × batch × bytes`` —
grouped-query attention divides it by ``heads / kv_heads``; it grows linearly with context and
batch and, at long contexts, exceeds the weights.

**Activations at inference** (prefill, the peak): one layer's working set at a time,
``batch × prompt × (4·d + 2·kv·hd + 3·d_ff) × bytes`` (residual, norm, q, k, v, attention output,
gate, up, and their SwiGLU product), plus the last position's logits in float32.

**Training** (Adam, mixed precision; ZeRO paper's count): 16 bytes per trained parameter —
2 (bf16 weights) + 2 (bf16 gradients) + 4 (fp32 master weights) + 8 (Adam's two moments) —
plus activations, ``s·b·h·(34 + 5·a·s/h)`` bytes per layer in 16-bit (Korthikanti et al. 2022;
``2·s·b·h`` with full activation checkpointing). LoRA trains only ``r·(in + out)`` parameters per
adapted linear, so the frozen base costs its weights only (2 bytes bf16, ≈ 0.52 bytes NF4 for
QLoRA).
"""

from __future__ import annotations

from dataclasses import dataclass

from course_utils import checks

GB = 1e9
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "fp8": 1.0}
# bits per quantized weight, constants included
QUANT_BITS = {
    "fp32": 32.0, "bf16": 16.0, "fp16": 16.0,
    "int8": 8.0,  # bitsandbytes LLM.int8(); + one fp32 scale per output row (counted apart)
    "nf4": 4.0 + 8 / 64 + 32 / (64 * 256),  # NF4 + double-quantized absmax
    "int4-g128": 4.0 + (16 + 4) / 128,  # GPTQ/AWQ: fp16 scale + 4-bit zero per 128 weights
    "int3-g128": 3.0 + (16 + 3) / 128,
    "Q8_0": 8.5, "Q4_0": 4.5, "Q4_1": 5.0, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625,
}


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: a decoder's sizes (LLaMA-style: SwiGLU MLP, grouped-query attention)."""

    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder's linear layers (what GPTQ/AWQ/bitsandbytes quantize)."""
        d, kv = self.hidden, self.n_kv_heads * self.head_dim
        attention = d * d * 2 + d * kv * 2  # q, o and k, v
        return self.n_layers * (attention + 3 * d * self.intermediate)

    @property
    def embedding_params(self) -> int:
        """Token embedding plus the LM head (once when tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def norm_params(self) -> int:
        return (2 * self.n_layers + 1) * self.hidden

    @property
    def n_params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params

    @classmethod
    def from_config(cls, config, name: str = "model") -> ModelShape:
        """From a ``transformers`` LLaMA-style config."""
        return cls(name, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                   config.intermediate_size, config.vocab_size, bool(getattr(config, "tie_word_embeddings", False)))


# Llama-2 shapes (Touvron et al. 2023, Table 1 and the released configs), context 4096
LLAMA2 = {
    "7B": ModelShape("Llama-2-7B", 32, 4096, 32, 32, 11008, 32000),
    "13B": ModelShape("Llama-2-13B", 40, 5120, 40, 40, 13824, 32000),
    "70B": ModelShape("Llama-2-70B", 80, 8192, 64, 8, 28672, 32000),
}


def rule_of_thumb_bytes(n_params: float, precision: str) -> float:
    """The syllabus's ``N × bytes/param`` (fp32 4, fp16/bf16 2, int8 1, int4 0.5)."""
    table = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5, "nf4": 0.5}
    checks.one_of("precision", precision, table)
    checks.number("n_params", n_params, low=0)
    return n_params * table[precision]


def weight_bytes(shape: ModelShape, precision: str, *, keep_dtype: str = "bf16",
                 embedding_precision: str | None = None) -> float:
    """Bytes of the weights: decoder linears at ``precision`` (a key of :data:`QUANT_BITS`), the
    rest (norms, and embeddings unless ``embedding_precision`` is given) in ``keep_dtype``."""
    checks.instance("shape", shape, ModelShape)
    checks.one_of("precision", precision, QUANT_BITS)
    checks.one_of("keep_dtype", keep_dtype, DTYPE_BYTES)
    if precision in DTYPE_BYTES and precision not in ("int8",):
        return shape.n_params * DTYPE_BYTES[precision]
    linear = shape.linear_params * QUANT_BITS[precision] / 8
    if precision == "int8":
        out_rows = shape.n_layers * (2 * shape.hidden + 2 * shape.n_kv_heads * shape.head_dim
                                     + 2 * shape.intermediate + shape.hidden)
        linear += out_rows * 4  # one fp32 scale per output row
    if embedding_precision is None:
        embeddings = shape.embedding_params * DTYPE_BYTES[keep_dtype]
    else:
        checks.one_of("embedding_precision", embedding_precision, QUANT_BITS)
        embeddings = shape.embedding_params * QUANT_BITS[embedding_precision] / 8
    return linear + embeddings + shape.norm_params * DTYPE_BYTES[keep_dtype]


def kv_cache_bytes(shape: ModelShape, context: int, batch: int = 1, kv_dtype: str = "bf16") -> float:
    """``2 × layers × kv_heads × head_dim × context × batch × bytes``."""
    checks.instance("shape", shape, ModelShape)
    checks.positive_int(context=context, batch=batch)
    checks.one_of("kv_dtype", kv_dtype, DTYPE_BYTES)
    return 2.0 * shape.n_layers * shape.n_kv_heads * shape.head_dim * context * batch * DTYPE_BYTES[kv_dtype]


def activation_bytes(shape: ModelShape, prompt: int, batch: int = 1, dtype: str = "bf16") -> float:
    """Peak activations of a prefill over ``prompt`` tokens: one layer's working set
    ``b·T·(4d + 2·kv·hd + 3·d_ff)`` in ``dtype`` plus float32 logits of the last position."""
    checks.positive_int(prompt=prompt, batch=batch)
    checks.one_of("dtype", dtype, DTYPE_BYTES)
    per_token = 4 * shape.hidden + 2 * shape.n_kv_heads * shape.head_dim + 3 * shape.intermediate
    return batch * prompt * per_token * DTYPE_BYTES[dtype] + batch * shape.vocab * 4.0


def inference_memory(shape: ModelShape, precision: str = "bf16", context: int = 4096, batch: int = 1,
                     kv_dtype: str = "bf16", keep_dtype: str = "bf16") -> dict[str, float]:
    """Bytes to serve ``batch`` sequences of ``context`` tokens: ``{"weights", "kv_cache",
    "activations", "total"}`` (the prompt is taken as the whole context: the worst case)."""
    weights = weight_bytes(shape, precision, keep_dtype=keep_dtype)
    kv = kv_cache_bytes(shape, context, batch, kv_dtype)
    acts = activation_bytes(shape, context, batch, keep_dtype)
    return {"weights": weights, "kv_cache": kv, "activations": acts, "total": weights + kv + acts}


def generate_extra_bytes(shape: ModelShape, prompt: int, new_tokens: int, batch: int = 1,
                         dtype: str = "fp32") -> float:
    """What ``generate`` allocates on top of the weights: the KV cache of ``prompt + new_tokens``
    positions plus the prefill's activations (the measured quantity in the notebook)."""
    return kv_cache_bytes(shape, prompt + new_tokens, batch, dtype) + activation_bytes(shape, prompt, batch, dtype)


def training_memory(shape: ModelShape, method: str = "full", batch: int = 1, seq_len: int = 2048,
                    lora_rank: int = 16, checkpointing: bool = False) -> dict[str, float]:
    """Bytes to train with Adam in mixed precision: ``method`` is ``"full"`` (16 bytes per
    parameter), ``"lora"`` (bf16 frozen base + 16 bytes per LoRA parameter on every decoder
    linear) or ``"qlora"`` (NF4 base). Activations: ``s·b·h·(34 + 5·a·s/h)`` bytes per layer, or
    ``2·s·b·h`` with checkpointing. → ``{"weights", "gradients", "optimizer", "activations", "total"}``."""
    checks.one_of("method", method, ("full", "lora", "qlora"))
    checks.positive_int(batch=batch, seq_len=seq_len, lora_rank=lora_rank)
    s, b, h, a = seq_len, batch, shape.hidden, shape.n_heads
    per_layer = 2 * s * b * h if checkpointing else s * b * h * (34 + 5 * a * s / h)
    activations = shape.n_layers * per_layer
    if method == "full":
        n = shape.n_params
        out = {"weights": 2.0 * n + 4.0 * n, "gradients": 2.0 * n, "optimizer": 8.0 * n}  # bf16 + fp32 master
    else:
        kv = shape.n_kv_heads * shape.head_dim
        d, f = shape.hidden, shape.intermediate
        per_layer_lora = lora_rank * ((d + d) * 2 + (d + kv) * 2 + (d + f) * 3)
        n_lora = shape.n_layers * per_layer_lora
        base = weight_bytes(shape, "nf4" if method == "qlora" else "bf16")
        out = {"weights": base + 2.0 * n_lora + 4.0 * n_lora, "gradients": 2.0 * n_lora, "optimizer": 8.0 * n_lora}
    out["activations"] = float(activations)
    out["total"] = sum(out.values())
    return out


def peak_allocated_bytes(fn, device: str = "cpu"):
    """Run ``fn()`` and measure the peak of tensor memory it allocates on ``device`` beyond what was
    allocated before → ``(fn's result, peak bytes)``.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at the start. CPU: torch's
    profiler with ``profile_memory=True`` records every allocation and free of torch's CPU
    allocator; the running total it reports ("Total Allocated", counted from the profiler's start)
    peaks at the answer. It counts tensor bytes exactly — no RSS noise, but also not the allocator's
    or Python's own overheads."""
    import json
    import os
    import tempfile

    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        return result, float(torch.cuda.max_memory_allocated() - start)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as fh:
            events = json.load(fh)["traceEvents"]
    finally:
        os.unlink(path)
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0]
    return result, float(max(totals, default=0))
