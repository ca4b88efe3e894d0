"""Sampling from a language model: temperature, top-k, top-p, repetition penalty, and a
token-by-token generation loop with a KV cache.

A causal LM maps a prefix to *logits* ``z ∈ R^V`` (one score per vocabulary token). Decoding
turns them into the next token:

* **temperature** ``T > 0``: ``p_i = softmax(z / T)_i = exp(z_i / T) / Σ_j exp(z_j / T)``.
  ``T < 1`` sharpens the distribution (``T → 0`` approaches greedy argmax), ``T > 1`` flattens
  it (``T → ∞`` approaches uniform). Greedy decoding is a separate choice
  (``do_sample=False``), not ``T = 0`` (which would divide by zero).
* **top-k**: keep the ``k`` largest logits, set the rest to ``-inf`` (probability 0).
* **top-p (nucleus)**: keep the smallest set of most-likely tokens whose total probability is
  at least ``p``; the rest get ``-inf``.
* **repetition penalty** ``θ`` (CTRL, Keskar et al. 2019): for every token already in the
  sequence, ``z_i ← z_i / θ`` if ``z_i > 0`` else ``z_i · θ``; ``θ > 1`` discourages repeats.

Each filter reproduces the corresponding ``transformers`` logits processor exactly
(``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``,
``RepetitionPenaltyLogitsProcessor``; checked in ``tests/unit/test_generation.py``), and
:func:`generate` applies them in the order ``model.generate`` does (repetition penalty →
temperature → top-k → top-p → softmax → ``torch.multinomial``), so that with the same seed it
picks the same tokens.

All filters accept logits of shape ``(vocab,)`` or ``(batch, vocab)`` and return a new tensor
with the same shape, dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from course_utils import checks

__all__ = [
    "GenerationResult",
    "apply_repetition_penalty",
    "apply_temperature",
    "generate",
    "sample_next_token",
    "top_k_filter",
    "top_p_filter",
]


def _check_logits(logits: Any) -> None:
    checks.tensor("logits", logits, ndim=(1, 2), floating=True, shape="(vocab,) or (batch, vocab)")
    checks.non_empty("logits", logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scale logits by ``1 / temperature``: ``softmax(z / T)`` is the sampling distribution.

    Args:
        logits: ``(vocab,)`` or ``(batch, vocab)`` scores.
        temperature: ``T > 0`` (finite). ``T = 1`` leaves the distribution unchanged.

    Raises:
        ValueError: ``temperature <= 0`` or not finite (for greedy decoding use
            ``do_sample=False`` instead of ``T = 0``).
        TypeError: ``temperature`` is not a real number, or ``logits`` not a float tensor.
    """
    _check_logits(logits)
    checks.real("temperature", temperature)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; for greedy decoding pass "
                         "do_sample=False rather than temperature=0")
    return logits / float(temperature)


def top_k_filter(logits: torch.Tensor, top_k: int, filter_value: float = -math.inf) -> torch.Tensor:
    """Keep the ``top_k`` largest logits of each row; set every other entry to ``filter_value``.

    A token survives iff ``z_i >= z_(k)``, the k-th largest value of its row, so tokens tied
    with the k-th value are all kept (as ``transformers.TopKLogitsWarper``). A ``top_k`` larger
    than the vocabulary keeps everything.

    Raises:
        ValueError: ``top_k < 1``.
        TypeError: ``top_k`` is not an integer.
    """
    _check_logits(logits)
    checks.integer("top_k", top_k, low=1)
    k = min(int(top_k), logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, filter_value)


def top_p_filter(logits: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1,
                 filter_value: float = -math.inf) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most-likely tokens whose probability mass
    reaches ``top_p``; set the others to ``filter_value``.

    With ``p = softmax(z)`` sorted ascending, ``p_(1) <= ... <= p_(V)``, and cumulative sums
    ``c_j = p_(1) + ... + p_(j)``, token ``(j)`` is removed iff ``c_j <= 1 - top_p`` — i.e. the
    least likely tokens are dropped while the mass they hold stays at most ``1 - top_p``. The
    ``min_tokens_to_keep`` most likely tokens are always kept. This is exactly
    ``transformers.TopPLogitsWarper`` (computed in the dtype of ``logits``; ``generate`` casts
    to float32 first, as ``model.generate`` does). ``top_p = 1.0`` keeps every token.

    Raises:
        ValueError: ``top_p`` outside ``(0, 1]`` or ``min_tokens_to_keep < 1``.
        TypeError: ``top_p`` not a real number, ``min_tokens_to_keep`` not an integer.
    """
    _check_logits(logits)
    checks.real("top_p", top_p, low=0.0, high=1.0, low_open=True)
    checks.integer("min_tokens_to_keep", min_tokens_to_keep, low=1)
    p, keep = float(top_p), int(min_tokens_to_keep)
    if p == 1.0:
        return logits.clone()
    rows = logits if logits.ndim == 2 else logits.unsqueeze(0)
    sorted_logits, sorted_indices = torch.sort(rows, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative <= (1.0 - p)
    sorted_remove[..., -keep:] = False
    remove = sorted_remove.scatter(-1, sorted_indices, sorted_remove)
    out = rows.masked_fill(remove, filter_value)
    return out if logits.ndim == 2 else out.squeeze(0)


def apply_repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise tokens that already occur in ``input_ids`` (CTRL's repetition penalty).

    For each token ``i`` present in a row's ``input_ids``: ``z_i ← z_i / θ`` if ``z_i > 0``
    else ``z_i · θ`` (both lower the token's probability when ``θ > 1``). Each distinct token
    is penalised once, however often it occurs. Ids ``>= vocab`` are ignored (they cannot be
    generated), as in ``transformers.RepetitionPenaltyLogitsProcessor``.

    Args:
        logits: ``(vocab,)`` or ``(batch, vocab)``.
        input_ids: integer tensor ``(seq,)`` for 1-D logits, ``(batch, seq)`` for 2-D logits.
        penalty: ``θ > 0``; ``1.0`` changes nothing.

    Raises:
        ValueError: ``penalty <= 0``, mismatched shapes, or negative ids.
        TypeError: wrong types.
    """
    _check_logits(logits)
    checks.real("penalty", penalty, low=0.0, low_open=True)
    checks.tensor("input_ids", input_ids, integer=True)
    theta = float(penalty)
    if input_ids.ndim != logits.ndim or (logits.ndim == 2 and input_ids.shape[0] != logits.shape[0]):
        raise ValueError(f"input_ids must be (seq,) for logits (vocab,) or (batch, seq) for logits "
                         f"(batch, vocab); got input_ids {tuple(input_ids.shape)} and logits {tuple(logits.shape)}")
    if input_ids.numel() and int(input_ids.min()) < 0:
        raise ValueError("input_ids must be >= 0 (token ids)")
    if input_ids.shape[-1] == 0:
        return logits.clone()
    rows = logits if logits.ndim == 2 else logits.unsqueeze(0)
    ids = input_ids if input_ids.ndim == 2 else input_ids.unsqueeze(0)
    vocab = rows.shape[-1]
    ids = ids.to(rows.device).long().clamp(max=vocab)  # ids >= vocab land in a padding column
    padded = torch.nn.functional.pad(rows, (0, 1))
    score = padded.gather(-1, ids)
    score = torch.where(score < 0, score * theta, score / theta)
    out = padded.scatter(-1, ids, score)[..., :vocab]
    return out if logits.ndim == 2 else out.squeeze(0)


def sample_next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, do_sample: bool = True,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from logits.

    ``do_sample=False``: greedy, ``argmax_i z_i`` (the filters never remove the argmax and a
    positive temperature does not move it, so they are only validated). ``do_sample=True``:
    temperature → top-k → top-p → ``softmax`` → one draw with ``torch.multinomial`` (using
    ``generator``, or torch's global RNG when None) — the order and RNG use of
    ``model.generate(do_sample=True)``.

    Returns:
        The token id: a 0-d ``long`` tensor for ``(vocab,)`` logits, ``(batch,)`` for 2-D.
    """
    _check_logits(logits)
    checks.instance("do_sample", do_sample, bool)
    checks.instance("generator", generator, (torch.Generator, type(None)))
    scores = apply_temperature(logits, temperature)
    if top_k is not None:
        scores = top_k_filter(scores, top_k)
    if top_p is not None:
        scores = top_p_filter(scores, top_p)
    if not do_sample:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if probs.ndim == 1:
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(0)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


@dataclass
class GenerationResult:
    """What :func:`generate` returns.

    Attributes:
        text: the generated continuation, decoded without special tokens.
        token_ids: the generated ids (the EOS token included when generation stopped on it).
        prompt_ids: the ids of the (templated) prompt fed to the model.
        prompt_text: the prompt exactly as the model saw it (after the chat template).
        finish_reason: ``"eos"`` (an end-of-sequence token was produced) or ``"length"``.
    """

    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    prompt_text: str
    finish_reason: str


def _cache_keyword() -> str:
    """The name under which a transformers model takes and returns its KV cache: ``cache`` in
    current releases (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   getattr(tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        ids.update([source] if isinstance(source, int) else list(source))
    return ids


def _render_prompt(tokenizer, prompt: str | list[dict[str, str]], use_chat_template: bool | None) -> tuple[str, bool]:
    checks.instance("prompt", prompt, (str, list))
    is_messages = isinstance(prompt, list)
    if is_messages and not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in prompt):
        raise TypeError("prompt as a list must hold chat messages: dicts with 'role' and 'content'")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is None:
        use_chat_template = has_template
    if is_messages and not use_chat_template:
        raise ValueError("a list of chat messages needs use_chat_template=True (or None)")
    if not use_chat_template:
        return prompt, False
    if not has_template:
        raise ValueError("use_chat_template=True but the tokenizer has no chat template; pass use_chat_template=False")
    messages = prompt if is_messages else [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, True


@torch.inference_mode()
def generate(model, tokenizer, prompt: str | list[dict[str, str]], *, max_new_tokens: int = 64,
             do_sample: bool = True, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, seed: int | None = None,
             use_chat_template: bool | None = None,
             logits_processor: Sequence[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None,
             ) -> GenerationResult:
    """Generate a continuation token by token, reusing the KV cache.

    The loop: one forward pass over the prompt fills the cache (``cache``) and gives
    the logits of the next token; then, per step, the logits (in float32) go through the
    repetition penalty (on prompt + generated ids), temperature, top-k and top-p, a token is
    drawn (or the argmax taken when ``do_sample=False``), and only that one new token is fed
    back with the cache — so each step costs O(context) attention instead of recomputing all
    keys and values. Generation stops at an EOS token (the model's ``generation_config`` EOS
    ids and the tokenizer's) or after ``max_new_tokens``.

    With ``seed`` set, sampling uses ``torch.Generator().manual_seed(seed)``; without it, torch's
    global RNG. On CPU, ``torch.manual_seed(s); model.generate(..., do_sample=True, ...)`` and
    ``generate(..., seed=s)`` pick the same tokens.

    Args:
        prompt: text, or a list of chat messages (``{"role": ..., "content": ...}``).
        use_chat_template: None (use the tokenizer's chat template when it has one), True, False.
        logits_processor: optional functions ``f(input_ids, scores) -> scores`` (the
            ``transformers`` processor signature; ``input_ids`` is ``(1, seq)``, ``scores``
            ``(1, vocab)`` float32), applied after the repetition penalty and before
            temperature/top-k/top-p — e.g. your own filters from lab00.

    Returns:
        A :class:`GenerationResult` (``.text``, ``.token_ids``, ``.finish_reason``, ...).
    """
    checks.integer("max_new_tokens", max_new_tokens, low=1)
    if seed is not None:
        checks.integer("seed", seed)
    checks.real("repetition_penalty", repetition_penalty, low=0.0, low_open=True)
    checks.instance("do_sample", do_sample, bool)
    # validate the sampling arguments before the (slow) prefill; greedy here, so no RNG is consumed
    sample_next_token(torch.zeros(2), temperature=temperature, top_k=top_k, top_p=top_p, do_sample=False)
    processors = list(logits_processor or [])
    if not all(callable(p) for p in processors):
        raise TypeError("logits_processor must be a sequence of callables f(input_ids, scores) -> scores")
    cache_name = _cache_keyword()
    prompt_text, templated = _render_prompt(tokenizer, prompt, use_chat_template)
    device = model.device
    # A chat template already contains the special tokens the model expects.
    input_ids = tokenizer(prompt_text, return_tensors="pt", add_special_tokens=not templated)["input_ids"].to(device)
    if input_ids.shape[-1] == 0:
        raise ValueError("prompt is empty after tokenization")
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    eos = _eos_ids(model, tokenizer)

    all_ids = input_ids
    new_ids: list[int] = []
    finish_reason = "length"
    outputs = model(input_ids=input_ids, use_cache=True)  # prefill: fills the KV cache
    for step in range(max_new_tokens):
        logits = outputs.logits[:, -1, :].to(torch.float32)
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, all_ids, repetition_penalty)
        for process in processors:
            logits = process(all_ids, logits)
        next_token = sample_next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                       do_sample=do_sample, generator=generator)  # shape (1,)
        token = int(next_token[0])
        new_ids.append(token)
        all_ids = torch.cat([all_ids, next_token[:, None]], dim=-1)
        if token in eos:
            finish_reason = "eos"
            break
        if step + 1 < max_new_tokens:  # decode: feed only the new token, reuse cached keys/values
            outputs = model(input_ids=next_token[:, None], use_cache=True, **{cache_name: outputs[cache_name]})
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    return GenerationResult(text=text, token_ids=new_ids, prompt_ids=input_ids[0].tolist(),
                            prompt_text=prompt_text, finish_reason=finish_reason)
