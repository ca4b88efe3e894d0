"""Batched chat generation for the prompting chapter: greedy or sampled, ``n`` completions per
prompt, an optional logits processor (constrained decoding), and a call counter so that every
technique's cost is measured in model calls and generated tokens.

A *model call* is one generated completion (one sequence); a batch of 8 prompts × 4 samples
is 32 calls. Tree of Thoughts, self-consistency and CoT are compared on this count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from course_utils import checks


@dataclass
class CallCounter:
    """Running totals: ``calls`` (completions generated), ``tokens`` (new tokens) and ``cut``
    (completions that used all ``max_new_tokens`` without ending: possibly cut off mid-answer)."""

    calls: int = 0
    tokens: int = 0
    cut: int = 0

    def add(self, calls: int, tokens: int, cut: int = 0) -> None:
        self.calls += calls
        self.tokens += tokens
        self.cut += cut


def render(tokenizer, messages: list[dict] | str) -> str:
    """The prompt text of ``messages`` through the tokenizer's chat template, ending where the
    assistant starts to answer. A string is taken as an already rendered prompt and returned as it is
    (chapter 09 renders prompts with the template's tool format)."""
    if isinstance(messages, str):
        return messages
    checks.non_empty("messages", messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def chat_generate(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, n: int = 1, batch_size: int = 8,
                  logits_processor_factory=None, counter: CallCounter | None = None,
                  progress: bool = False, desc: str = "generate") -> list[list[str]]:
    """Complete each conversation ``n`` times → one list of ``n`` strings per conversation.

    ``temperature == 0`` is greedy decoding (then ``n`` must be 1); otherwise sampling with
    ``temperature`` and nucleus ``top_p``. Prompts are left-padded and batched
    (``batch_size`` prompts, so ``batch_size · n`` sequences per forward pass).
    ``logits_processor_factory(batch_rows)``, when given, returns a logits processor for a
    batch of ``batch_rows`` sequences (see :mod:`course_utils.prompting.constrained`).
    """
    checks.positive_int(max_new_tokens=max_new_tokens, n=n, batch_size=batch_size)
    checks.number("temperature", temperature, low=0.0)
    checks.probability("top_p", top_p, allow_zero=False)
    if temperature == 0 and n > 1:
        raise ValueError(f"n={n} greedy completions would all be the same; pass temperature > 0 to sample")
    texts = [render(tokenizer, m) for m in conversations]
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[list[str]] = []
    try:
        for i in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False, disable=not progress):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            rows = enc["input_ids"].shape[0] * n
            kwargs = {"do_sample": False} if temperature == 0 else {
                "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            if logits_processor_factory is not None:
                kwargs["logits_processor"] = [logits_processor_factory(rows)]
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tokenizer.pad_token_id, **kwargs)
            new = gen[:, enc["input_ids"].shape[1]:]
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            if counter is not None:
                ends = (new == tokenizer.pad_token_id) | (new == tokenizer.eos_token_id)
                ended = ends.any(1)
                lengths = torch.where(ended, ends.int().argmax(1) + 1, torch.full_like(ends[:, 0], new.shape[1],
                                                                                       dtype=torch.long))
                counter.add(rows, int(lengths.sum()), int((~ended).sum()))
            out += [[d.strip() for d in decoded[j:j + n]] for j in range(0, len(decoded), n)]
    finally:
        tokenizer.padding_side = side
    return out
