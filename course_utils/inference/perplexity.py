"""Perplexity on held-out text, and the calibration text quantizers learn from — never the same.

``PPL = exp( -(1/N) Σ_t log p(x_t | x_<t) )`` over the N predicted tokens. The held-out text is
the Python **language reference** (``pydoc_data.topics``, what ``help("if")`` shows); calibration
comes from the **standard-library docstrings** of :mod:`course_utils.text_corpus`, a disjoint
source. Text is cut into non-overlapping windows of ``seq_len`` tokens; each window is scored on
its own (the first token of a window is never predicted), so every quantized model is scored on
exactly the same tokens.
"""

from __future__ import annotations

import math

import torch

from course_utils import checks


def _tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def heldout_ids(tokenizer, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids of the language-reference topics (1-D), documents separated by EOS."""
    from course_utils.text_corpus import pydoc_topics

    ids = _tokenize(tokenizer, [doc.text for doc in pydoc_topics()])
    return ids if max_tokens is None else ids[:max_tokens]


def calibration_ids(tokenizer, n_sequences: int = 32, seq_len: int = 256, seed: int = 0) -> torch.Tensor:
    """``(n_sequences, seq_len)`` random windows from the standard-library docstrings (never
    the language reference), for GPTQ/AWQ calibration."""
    from course_utils.text_corpus import stdlib_docstrings

    checks.positive_int(n_sequences=n_sequences, seq_len=seq_len)
    ids = _tokenize(tokenizer, [doc.text for doc in stdlib_docstrings()])
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_sequences,), generator=generator)
    return torch.stack([ids[s:s + seq_len] for s in starts.tolist()])


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seq_len: int = 512, batch_size: int = 4,
               max_windows: int | None = None, progress: bool = False) -> float:
    """Perplexity of ``model`` on the 1-D token stream ``ids``, in non-overlapping windows of
    ``seq_len`` (at most ``max_windows``); the loss is summed in float32 over all predicted tokens."""
    from tqdm.auto import tqdm

    checks.tensor("ids", ids, ndim=1, floating=False)
    checks.positive_int(seq_len=seq_len, batch_size=batch_size)
    n_windows = ids.numel() // seq_len
    if max_windows is not None:
        checks.positive_int(max_windows=max_windows)
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        raise ValueError(f"ids holds {ids.numel()} tokens, fewer than one window of seq_len={seq_len}")
    windows = ids[: n_windows * seq_len].reshape(n_windows, seq_len)
    total, count = 0.0, 0
    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress):
        batch = windows[start:start + batch_size].to(model.device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        total -= float(logp.gather(-1, batch[:, 1:, None]).sum())
        count += batch[:, 1:].numel()
    return math.exp(total / count)
