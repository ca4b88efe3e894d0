"""Reading a final answer out of free text, and majority voting over several answers.

A small model's formatting varies: ``The answer is 12.``, ``Answer: $12``, ``**12**``,
``#### 12``, ``\\boxed{12}``, ``12 apples``, ``1,200``, or a long ramble that ends in a number.
:func:`final_answer_text` finds the span after the *last* answer marker (the conclusion, not
an intermediate step); :func:`extract_number` reads the number from it, and without any
marker falls back to the last number in the text (where a rationale's result usually is).
Both are general: an agent (chapter 09) reads ``Final Answer: ...`` with the same functions.

Self-consistency (Wang et al., 2023) samples several reasoning paths and returns the most
frequent final answer: ``â = argmax_a Σ_i 1[a_i = a]`` over the paths whose answer could be
read (None is not a vote).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Sequence
from fractions import Fraction

from course_utils import checks

_MARKERS = re.compile(r"(?:final answer|the answer is|answer is|answer|result is|####|\\boxed\{)\s*(?:is\b)?\s*[:=]?\s*",
                      re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|(?<![\w.])-?\d+(?:\.\d+)?(?:/\d+)?")
_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def final_answer_text(text: str) -> str | None:
    """The text after the last answer marker (``final answer``, ``the answer is``,
    ``answer:``, ``####``, ``\\boxed{``) up to the end of its line, stripped of markdown
    emphasis; None when there is no marker."""
    checks.instance("text", text, str)
    spans = []
    for m in _MARKERS.finditer(text):
        end = text.find("\n", m.end())
        spans.append(text[m.end():end if end >= 0 else len(text)])
    spans = [s for s in spans if s.strip(" *:.")]
    if not spans:
        return None
    return spans[-1].replace("**", "").replace("}", "").strip().rstrip(".").strip()


def _to_number(token: str) -> int | float:
    value = Fraction(token.replace(",", ""))
    return int(value) if value.denominator == 1 else float(value)


def extract_number(text: str) -> int | float | None:
    """The final numeric answer in ``text``: the first number after the last answer marker,
    else the last number anywhere (``"1,200"`` → 1200, ``"12.0"`` → 12, ``"3/4"`` → 0.75,
    a lone number word such as ``"twelve"`` → 12); None when there is none."""
    span = final_answer_text(text)
    if span is not None:
        found = _NUMBER.findall(span)
        if found:
            return _to_number(found[0])
        word = re.match(r"[a-z]+", span.lower())
        if word and word.group() in _WORDS:
            return _WORDS[word.group()]
    found = _NUMBER.findall(text)
    return _to_number(found[-1]) if found else None


def majority_vote(answers: Sequence[Hashable | None]) -> tuple[Hashable | None, int]:
    """The most frequent non-None answer and its count; ties go to the answer seen first
    (so the result does not depend on hashing); ``(None, 0)`` when no answer was read."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None, 0
    best = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == best)
    return winner, best
