"""Two production pitfalls (syllabus 15.9): context exceedance and batch non-determinism.

**1. Context length exceedance.** A model only has positions up to ``max_position_embeddings``;
a tokenizer called with ``truncation=True`` silently drops the excess (the model never sees the
question at the end of a long prompt), and a prompt past the limit degrades or fails. The fix is
to count tokens *before* calling the model and refuse with a clear error:
:func:`check_context`.

**3. "Temperature 0" is not deterministic across batch shapes.** The same prompt run alone and
inside a padded batch goes through different kernels (different matrix shapes, reduction orders,
padding and masks), so its logits differ in the last bits, and a near-tie between two tokens can
flip the greedy choice. Fixes: run the prompt at the same batch shape (batch 1, or a fixed
bucket), left-pad with a correct attention mask and position ids, compute in float32, or use
batch-invariant kernels (the "defeating non-determinism" kernels of Thinking Machines, 2025).
"""

from __future__ import annotations

import torch

from course_utils import checks


class ContextLengthError(ValueError):
    """The prompt plus the tokens to generate do not fit in the model's context window."""


def context_window(model) -> int:
    """The model's context length (``config.max_position_embeddings``)."""
    return int(model.config.max_position_embeddings)


def check_context(tokenizer, prompt: str, max_new_tokens: int, context_length: int) -> list[int]:
    """Token ids of ``prompt`` if ``len(prompt tokens) + max_new_tokens <= context_length``;
    otherwise raise :class:`ContextLengthError` saying by how many tokens it is over."""
    checks.instance("prompt", prompt, str)
    checks.non_negative_int(max_new_tokens=max_new_tokens)
    checks.positive_int(context_length=context_length)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    needed = len(ids) + max_new_tokens
    if needed > context_length:
        raise ContextLengthError(
            f"prompt has {len(ids)} tokens and max_new_tokens={max_new_tokens}: {needed} tokens exceed the "
            f"context window of {context_length} by {needed - context_length}; shorten the prompt "
            "(summarize, retrieve fewer chunks) or use a model with a longer context")
    return ids


@torch.inference_mode()
def batch_vs_alone_logits(model, tokenizer, prompt: str, fillers: list[str],
                          padding_side: str = "left") -> dict[str, float | bool]:
    """Next-token logits of ``prompt`` alone vs inside a padded batch with ``fillers``:
    ``{"max_abs_diff", "same_argmax", "top2_gap"}`` (``top2_gap``: the margin between the
    two best logits when alone — a small gap is where a flip can happen)."""
    checks.instance("prompt", prompt, str)
    checks.non_empty("fillers", fillers)
    checks.one_of("padding_side", padding_side, ("left", "right"))
    alone_ids = tokenizer(prompt, return_tensors="pt").to(model.device)
    alone = model(**alone_ids).logits[0, -1].float()
    saved = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        batch = tokenizer([prompt, *fillers], return_tensors="pt", padding=True).to(model.device)
    finally:
        tokenizer.padding_side = saved
    logits = model(**batch).logits[0].float()
    if padding_side == "left":
        in_batch = logits[-1]
    else:
        in_batch = logits[int(batch["attention_mask"][0].sum()) - 1]
    top2 = torch.topk(alone, 2).values
    return {"max_abs_diff": float((alone - in_batch).abs().max()),
            "same_argmax": bool(alone.argmax() == in_batch.argmax()),
            "top2_gap": float(top2[0] - top2[1])}
