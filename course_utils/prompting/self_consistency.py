"""Self-consistency (Wang et al., 2023): sample n reasoning paths at temperature T (nucleus
top-p), read each path's final answer, and return the majority answer.

Accuracy as a function of n is estimated from one pool of N ≥ n samples per question: for
each n, draw ``draws`` random subsets of size n (without replacement), vote in each, and
average correctness — an unbiased estimate of "accuracy with n samples" that reuses the same
generations for every n instead of sampling again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from course_utils import checks
from course_utils.prompting.answers import extract_number, majority_vote
from course_utils.prompting.llm import CallCounter, chat_generate


def sample_paths(model, tokenizer, conversations: list[list[dict]], n: int, *, temperature: float = 0.7,
                 top_p: float = 0.95, max_new_tokens: int = 96, batch_size: int = 2,
                 counter: CallCounter | None = None, progress: bool = True) -> list[list[str]]:
    """``n`` sampled completions per conversation (``batch_size`` conversations × n rows per
    forward pass)."""
    checks.positive_number(temperature=temperature)
    return chat_generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, n=n, batch_size=batch_size, counter=counter, progress=progress,
                         desc=f"self-consistency n={n}")


def self_consistency(paths: Sequence[str], extract: Callable[[str], object] = extract_number):
    """The majority answer of the reasoning ``paths`` (None when no path has an answer)."""
    return majority_vote([extract(p) for p in paths])[0]


def accuracy_vs_n(answers: Sequence[Sequence], gold: Sequence, ns: Sequence[int], *, draws: int = 32,
                  seed: int = 0) -> dict[int, float]:
    """Voting accuracy with n samples, for each n in ``ns``, from pools of extracted answers
    (one pool per question, all the same size N ≥ max(ns)); see the module docstring."""
    checks.non_empty("answers", answers)
    if len(answers) != len(gold):
        raise ValueError(f"answers ({len(answers)}) and gold ({len(gold)}) must have the same length")
    size = len(answers[0])
    if any(len(a) != size for a in answers):
        raise ValueError("every question needs the same number of sampled answers")
    checks.positive_int(draws=draws)
    rng = random.Random(seed)
    out = {}
    for n in ns:
        checks.positive_int(n=n)
        if n > size:
            raise ValueError(f"n={n} is more than the {size} samples per question")
        reps = 1 if n == size else draws
        hits = 0.0
        for pool, target in zip(answers, gold):
            hits += sum(majority_vote(rng.sample(list(pool), n))[0] == target for _ in range(reps)) / reps
        out[n] = hits / len(answers)
    return out
