"""Prompt builders: zero-shot, few-shot (k exemplars chosen at random or by embedding
similarity) and chain of thought, all as chat messages rendered by the model's own chat
template (:func:`course_utils.prompting.llm.render`).

Styles (``build_messages(question, style, exemplars)``):

* ``"zero_shot"``: the question and "Answer with the final number only.";
* ``"few_shot"``: k solved exemplars as earlier user/assistant turns, answers only
  (``The answer is N.``), then the question (Brown et al., 2020);
* ``"cot"``: zero-shot chain of thought, the question then "Let's think step by step."
  (Kojima et al., 2022);
* ``"few_shot_cot"``: the exemplars' turns carry their step-by-step rationales (Wei et al., 2022);
* ``"plain"``: the bare question — the format the fine-tuned models of the chapter were trained on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from course_utils import checks

SYSTEM = "You are a careful assistant who solves math word problems."
STYLES = ("plain", "zero_shot", "few_shot", "cot", "few_shot_cot")
DIRECT_SUFFIX = "Answer with the final number only."
COT_SUFFIX = "Let's think step by step."


def answer_only(row: dict) -> str:
    """An exemplar's answer turn without reasoning."""
    return f"The answer is {row['answer']}."


def build_messages(question: str, style: str = "zero_shot", exemplars: Sequence[dict] = (),
                   system: str | None = SYSTEM) -> list[dict]:
    """Chat messages for ``question`` in one of :data:`STYLES`. Few-shot styles need
    ``exemplars`` (rows with ``question``, ``answer`` and, for ``few_shot_cot``, ``rationale``)."""
    checks.instance("question", question, str)
    checks.one_of("style", style, STYLES)
    if style.startswith("few_shot") and not exemplars:
        raise ValueError(f"style={style!r} needs exemplars (got none)")
    messages = [{"role": "system", "content": system}] if system else []
    for ex in exemplars if style.startswith("few_shot") else ():
        messages.append({"role": "user", "content": ex["question"]})
        messages.append({"role": "assistant", "content": ex["rationale"] if style == "few_shot_cot" else answer_only(ex)})
    suffix = {"zero_shot": DIRECT_SUFFIX, "cot": COT_SUFFIX}.get(style)
    messages.append({"role": "user", "content": f"{question}\n{suffix}" if suffix else question})
    return messages


class ExemplarSelector:
    """Choose k few-shot exemplars from ``pool`` for a question: ``"random"`` (a seeded draw)
    or ``"similar"`` (the k pool questions whose sentence embeddings have the highest cosine
    similarity with the question, Liu et al., 2022). Embeddings come from
    :class:`course_utils.rag.CachedEmbedder` (cached on disk)."""

    def __init__(self, pool: Sequence[dict], *, embedder=None, seed: int = 0):
        checks.non_empty("pool", pool)
        self.pool = list(pool)
        self.rng = random.Random(seed)
        self._embedder = embedder
        self._vectors: np.ndarray | None = None

    def _pool_vectors(self) -> np.ndarray:
        if self._vectors is None:
            if self._embedder is None:
                from course_utils.rag import CachedEmbedder

                self._embedder = CachedEmbedder()
            self._vectors = self._embedder.encode([r["question"] for r in self.pool])
        return self._vectors

    def select(self, question: str, k: int, method: str = "random") -> list[dict]:
        checks.positive_int(k=k)
        checks.one_of("method", method, ("random", "similar"))
        if k > len(self.pool):
            raise ValueError(f"k={k} is more than the {len(self.pool)} exemplars in the pool")
        if method == "random":
            return self.rng.sample(self.pool, k)
        q = self._embedder_query(question)
        scores = self._pool_vectors() @ q
        return [self.pool[i] for i in np.argsort(-scores, kind="stable")[:k]]

    def _embedder_query(self, question: str) -> np.ndarray:
        self._pool_vectors()
        return self._embedder.encode_query(question)
