"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a cheap *draft* proposes ``k``
tokens, the *target* scores all of them in **one** forward pass, and a rule keeps a prefix — so
each target pass yields between 1 and ``k + 1`` tokens while the output follows the target exactly.

**Greedy.** Keep draft token ``d_i`` while it equals the target's argmax at that position; at the
first disagreement take the target's token instead; if all ``k`` agree, the last logits give one
more token for free. The output is the target's own greedy output.

**Sampling.** With target probabilities ``p`` and draft probabilities ``q`` at each position,
accept ``d_i ~ q`` with probability ``min(1, p(d_i) / q(d_i))``; on rejection sample from
``norm(max(0, p - q))`` and stop; if all are accepted sample one more from ``p``. Then every
emitted token is distributed exactly as ``p`` (Leviathan et al., Theorem 3.5), whatever the draft.
A deterministic draft (prompt lookup) is the case ``q = one-hot(d_i)``.

**Drafts** (anything with ``propose(ids, k) → (tokens, q)``):

* :class:`PromptLookupDraft`: copy the tokens that followed the latest earlier occurrence of the
  sequence's last n-gram (Saxena 2023) — free, and strong when the answer quotes the prompt;
* :class:`ModelDraft`: a small causal LM with its own KV cache: e.g. :func:`self_draft` (the
  target's first layers with its final norm and LM head, no extra weights) or a quantized copy.

Speed-up ≈ (tokens per target pass) × (target pass time) / (target pass + k draft steps).
Both the target's and the draft's caches are cropped back after each rejection.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from course_utils import checks
from course_utils.inference.kv_cache import _as_row, eos_ids, forward_with_cache


class PromptLookupDraft:
    """Propose the ``k`` tokens that followed the most recent earlier occurrence of the last
    ``n`` tokens, trying ``n = max_ngram … min_ngram``; no proposal when nothing matches."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        checks.positive_int(max_ngram=max_ngram, min_ngram=min_ngram)
        if min_ngram > max_ngram:
            raise ValueError(f"min_ngram={min_ngram} must be <= max_ngram={max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, ids: list[int], k: int, temperature: float | None = None) -> tuple[list[int], None]:
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if len(ids) <= n:
                continue
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):  # latest earlier match first
                if ids[start:start + n] == tail:
                    follow = ids[start + n:start + n + k]
                    if follow:
                        return follow, None
        return [], None


class ModelDraft:
    """A causal LM drafting with its own KV cache; greedy when ``temperature`` is None, else
    sampling from ``softmax(logits / T)`` and returning those probabilities ``q``."""

    def __init__(self, model, generator: torch.Generator | None = None):
        self.model, self.generator = model, generator
        self.cached: list[int] = []  # the tokens whose keys/values are in self.past
        self.past = None

    def reset(self) -> None:
        self.cached, self.past = [], None

    @torch.inference_mode()
    def propose(self, ids: list[int], k: int, temperature: float | None = None):
        keep = 0
        while keep < min(len(self.cached), len(ids) - 1) and self.cached[keep] == ids[keep]:
            keep += 1
        if self.past is not None and keep < len(self.cached):
            self.past.crop(keep - len(self.cached))
        self.cached = self.cached[:keep]
        feed = ids[keep:]
        tokens, probs = [], []
        for _ in range(k):
            logits, self.past = forward_with_cache(self.model, torch.tensor([feed], device=self.model.device), self.past)
            self.cached += feed
            logits = logits[0, -1].float()
            if temperature is None:
                token = int(logits.argmax())
            else:
                q = torch.softmax(logits / temperature, dim=-1)
                token = int(torch.multinomial(q, 1, generator=self.generator))
                probs.append(q)
            tokens.append(token)
            feed = [token]
        return tokens, (torch.stack(probs) if probs else None)


def self_draft(target, n_layers: int):
    """A draft model made of the target's first ``n_layers`` decoder layers plus its embedding,
    final norm and LM head — shared modules, no copy of any weight."""
    checks.positive_int(n_layers=n_layers)
    total = target.config.num_hidden_layers
    if n_layers >= total:
        raise ValueError(f"n_layers={n_layers} must be fewer than the target's {total} layers")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = n_layers
    with torch.device("meta"):
        draft = type(target)(config)
    draft.model.embed_tokens = target.model.embed_tokens
    draft.model.layers = nn.ModuleList(list(target.model.layers[:n_layers]))
    draft.model.norm = target.model.norm
    draft.model.rotary_emb = target.model.rotary_emb
    draft.lm_head = target.lm_head
    draft.generation_config = copy.deepcopy(target.generation_config)
    return draft.eval()


def accept_or_resample(p: torch.Tensor, q: torch.Tensor | None, token: int, u: float,
                       generator: torch.Generator | None = None) -> tuple[bool, int]:
    """Leviathan et al.'s rule for one drafted ``token``: accept iff ``u < p(token) / q(token)``
    (``q = one-hot`` when None); else draw from ``norm(max(0, p - q))`` → ``(accepted, token)``."""
    q_token = 1.0 if q is None else float(q[token])
    if u < float(p[token]) / q_token:
        return True, token
    residual = p.clone()
    if q is None:
        residual[token] = 0.0
    else:
        residual = (p - q).clamp(min=0)
    if float(residual.sum()) <= 0:  # p == q: cannot happen after a rejection, but stay safe
        residual = p
    return False, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


@dataclass
class SpeculativeResult:
    """``tokens``: the new ids; ``drafted``/``accepted``: draft tokens proposed/kept;
    ``target_calls``: target forward passes (plain decoding needs one per token)."""

    tokens: list[int]
    drafted: int
    accepted: int
    target_calls: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_call(self) -> float:
        return len(self.tokens) / self.target_calls if self.target_calls else 0.0


@torch.inference_mode()
def speculative_generate(target, draft, input_ids: torch.Tensor, max_new_tokens: int, k: int = 4,
                         do_sample: bool = False, temperature: float = 1.0,
                         generator: torch.Generator | None = None,
                         eos_token_ids: set[int] | None = None) -> SpeculativeResult:
    """Generate with ``draft`` proposing ``k`` tokens per target pass; greedy (``do_sample=False``)
    returns the target's greedy tokens, sampling follows the target's distribution at
    ``temperature`` (see the module docstring)."""
    checks.positive_int(max_new_tokens=max_new_tokens, k=k)
    checks.positive_number(temperature=temperature)
    ids = _as_row(input_ids)[0].tolist()
    eos = eos_ids(target) if eos_token_ids is None else set(eos_token_ids)
    if hasattr(draft, "reset"):
        draft.reset()
    past, cached = None, 0  # the target's cache holds ids[:cached]
    new: list[int] = []
    drafted = accepted = calls = 0
    while len(new) < max_new_tokens and not (new and new[-1] in eos):
        budget = max_new_tokens - len(new)
        proposal, q = draft.propose(ids, min(k, budget - 1), None if not do_sample else temperature) \
            if budget > 1 else ([], None)
        feed = ids[cached:] + proposal
        logits, past = forward_with_cache(target, torch.tensor([feed], device=target.device), past)
        calls += 1
        logits = logits[0, -len(proposal) - 1:].float()  # predictions for each proposal slot + 1
        drafted += len(proposal)
        emitted: list[int] = []
        for i, token in enumerate(proposal):
            if do_sample:
                p = torch.softmax(logits[i] / temperature, dim=-1)
                u = float(torch.rand((), generator=generator))
                ok, token = accept_or_resample(p, None if q is None else q[i], token, u, generator)
            else:
                best = int(logits[i].argmax())
                ok, token = best == token, best
            emitted.append(token)
            if not ok:
                break
            accepted += 1
            if token in eos:
                break
        else:  # every proposal kept (or none made): one more token from the last position
            if not (emitted and emitted[-1] in eos):
                last = logits[len(proposal)]
                if do_sample:
                    p = torch.softmax(last / temperature, dim=-1)
                    emitted.append(int(torch.multinomial(p, 1, generator=generator)))
                else:
                    emitted.append(int(last.argmax()))
        cached_now = len(ids) + len(proposal)  # the target's cache now covers ids + proposal
        ids += emitted
        new += emitted
        keep = len(ids) - 1  # everything but the newest token, which is fed next time
        if cached_now > keep:
            past.crop(keep - cached_now)
        cached = min(keep, cached_now)
    new = new[:max_new_tokens]
    for i, token in enumerate(new):
        if token in eos:
            new = new[:i + 1]
            break
    return SpeculativeResult(new, drafted, accepted, calls)
