"""Greedy generation with and without a KV cache, on token ids.

Without a cache, step ``t`` runs the whole sequence (``T + t`` tokens) through the model to get
the next token: every key and value is recomputed, ``O((T + t)·P)`` work per step and quadratic in
total. With a cache, the keys and values of past positions are kept per layer; each step feeds
only the newest token, so a step costs ``O(P)`` matrix work plus attention over the cache — and
at batch 1 that step is **memory-bound**: every weight is read from memory to do 2 FLOPs per
weight, so tokens/s is about memory bandwidth / model bytes, whatever the compute.

Both loops here pick ``argmax`` of the last position's logits and stop at an EOS id or after
``max_new_tokens``, exactly as ``model.generate(do_sample=False)``; the unit tests check they
return the same tokens.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from course_utils import checks


def eos_ids(model, tokenizer=None) -> set[int]:
    """The EOS ids of ``model.generation_config`` (and the tokenizer's, when given)."""
    ids: set[int] = set()
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   getattr(tokenizer, "eos_token_id", None)):
        if source is not None:
            ids.update([source] if isinstance(source, int) else list(source))
    return ids


def forward_with_cache(model, input_ids: torch.Tensor, cache: Any = None) -> tuple[torch.Tensor, Any]:
    """One forward pass that reads and extends the KV ``cache`` (None: start one) →
    ``(logits, cache)``. Recent transformers call the argument ``cache`` (``past_key_values``
    before 5.2x); both are supported."""
    if "cache" in inspect.signature(model.forward).parameters:
        out = model(input_ids=input_ids, cache=cache, use_cache=True)
        return out.logits, out.cache
    out = model(input_ids=input_ids, past_key_values=cache, use_cache=True)
    return out.logits, out.past_key_values


def _as_row(input_ids: torch.Tensor) -> torch.Tensor:
    checks.tensor("input_ids", input_ids, ndim=(1, 2), floating=False, shape="(seq,) or (1, seq)")
    row = input_ids if input_ids.ndim == 2 else input_ids.unsqueeze(0)
    if row.shape[0] != 1 or row.shape[1] == 0:
        raise ValueError(f"input_ids must hold one non-empty sequence, got shape {tuple(input_ids.shape)}")
    return row


@torch.inference_mode()
def greedy_generate(model, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
                    eos_token_ids: set[int] | None = None) -> list[int]:
    """Greedy decoding → the new token ids (EOS included when reached).

    ``use_cache=True``: one prefill pass, then one token per step with ``past_key_values``.
    ``use_cache=False``: the full sequence every step."""
    checks.positive_int(max_new_tokens=max_new_tokens)
    ids = _as_row(input_ids).to(model.device)
    eos = eos_ids(model) if eos_token_ids is None else set(eos_token_ids)
    new: list[int] = []
    cache = None
    step_input = ids
    for _ in range(max_new_tokens):
        if use_cache:
            logits, cache = forward_with_cache(model, step_input, cache)
        else:
            logits = model(input_ids=ids, use_cache=False).logits
        token = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (1, 1)
        new.append(int(token))
        ids = torch.cat([ids, token], dim=1)
        step_input = token
        if new[-1] in eos:
            break
    return new
