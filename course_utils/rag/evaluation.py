"""Retrieval and answer evaluation against a labelled question set.

For a question with relevant set ``R`` and a ranked list of sources ``d_1, d_2, …``
(chunks mapped to their source, repeats removed, so the ranking is over documents):

* ``hit@k = 1[∃ i ≤ k : d_i ∈ R]`` — hit rate@k is its mean over questions;
* ``RR = 1 / min{i : d_i ∈ R}`` (0 when none) — MRR is its mean;
* ``recall@k = |{d_1..d_k} ∩ R| / |R|``.

Groundedness of a generated answer: does it contain the question's gold fact
(case-insensitive), and is every source it cites one it was given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Sequence
from importlib import resources
from typing import Any

import numpy as np

from course_utils import checks


def hit_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """1.0 when any of the first ``k`` ranked items is relevant, else 0.0."""
    checks.positive_int(k=k)
    rel = set(relevant)
    return float(any(x in rel for x in list(ranked)[:k]))


def hit_rate_at_k(rankings: Sequence[Sequence[Hashable]], relevants: Sequence[Iterable[Hashable]], k: int) -> float:
    """Mean :func:`hit_at_k` over questions."""
    checks.same_length(rankings=rankings, relevants=relevants)
    checks.non_empty("rankings", rankings)
    return float(np.mean([hit_at_k(r, g, k) for r, g in zip(rankings, relevants)]))


def reciprocal_rank(ranked: Sequence[Hashable], relevant: Iterable[Hashable]) -> float:
    rel = set(relevant)
    for i, x in enumerate(ranked, start=1):
        if x in rel:
            return 1.0 / i
    return 0.0


def recall_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    checks.positive_int(k=k)
    rel = set(relevant)
    checks.non_empty("relevant", rel)
    return len(rel & set(list(ranked)[:k])) / len(rel)


def unique_sources(hits: Sequence, key: str = "topic") -> list:
    """Sources of ranked hits in order of first appearance (``hit.metadata[key]``)."""
    return list(dict.fromkeys(h.metadata.get(key) for h in hits))


def load_questions() -> list[dict]:
    """The shipped question set: ``[{"question", "topics", "gold"}, ...]`` about Python, labelled
    with the ``pydoc_data.topics`` keys that answer each question."""
    text = resources.files("course_utils").joinpath("data/rag_questions.json").read_text(encoding="utf-8")
    return json.loads(text)


def evaluate_rankings(rankings: Sequence[Sequence[Hashable]], relevants: Sequence[Iterable[Hashable]],
                      ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """hit@k and recall@k for each ``k`` in ``ks``, and MRR."""
    relevants = [set(r) for r in relevants]
    out = {f"hit@{k}": hit_rate_at_k(rankings, relevants, k) for k in ks}
    out.update({f"recall@{k}": float(np.mean([recall_at_k(r, g, k) for r, g in zip(rankings, relevants)])) for k in ks})
    out["mrr"] = float(np.mean([reciprocal_rank(r, g) for r, g in zip(rankings, relevants)]))
    return out


def evaluate_retriever(search: Callable[[str], Sequence], questions: Sequence[dict], *, ks: Sequence[int] = (1, 5),
                       key: str = "topic", progress: bool = False) -> dict[str, float]:
    """Evaluate ``search(question) -> ranked hits`` on ``questions`` (dicts with ``question``
    and ``topics``); hits are mapped to ``metadata[key]`` and deduplicated before scoring."""
    from tqdm.auto import tqdm

    checks.non_empty("questions", questions)
    rankings = [unique_sources(search(q["question"]), key) for q in tqdm(questions, disable=not progress)]
    return evaluate_rankings(rankings, [q["topics"] for q in questions], ks)


def contains_gold(answer: str, gold: str) -> bool:
    """Case- and whitespace-insensitive containment of the gold fact in the answer."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return norm(gold) in norm(answer)


def groundedness(answer, gold: str, relevant: Iterable[str] | None = None, key: str = "topic") -> dict[str, Any]:
    """Score one :class:`~course_utils.rag.generation.RAGAnswer`.

    Returns ``contains_gold``; ``n_citations``; ``citations_valid`` (every cited number names a
    source the model was given; True when it cites none); ``cites_relevant`` (a cited source is
    one of ``relevant``, None when not given).
    """
    cited = answer.citations
    valid = all(1 <= c <= len(answer.sources) for c in cited)
    out = {"contains_gold": contains_gold(answer.text, gold), "n_citations": len(cited), "citations_valid": valid}
    if relevant is not None:
        rel = set(relevant)
        out["cites_relevant"] = any(h.metadata.get(key) in rel for h in answer.cited_sources)
    return out


def citation_summary(gradings: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`groundedness` results of several answers.

    ``citing_rate`` = (answers citing ≥ 1 source) / (answers). ``valid_rate`` and
    ``relevant_rate`` average ``citations_valid`` and ``cites_relevant`` over the citing answers
    only, and are None when no answer cites: an answer without citations has nothing to check,
    and counting it as valid would make a model that never cites look perfectly attributed.
    ``relevant_rate`` is also None when the gradings were made without ``relevant``.
    """
    rows = list(gradings)
    checks.non_empty("gradings (the dicts groundedness() returns)", rows)
    citing = [g for g in rows if g["n_citations"] > 0]
    out: dict[str, Any] = {"citing_rate": len(citing) / len(rows), "n_citing": len(citing),
                           "valid_rate": None, "relevant_rate": None}
    if citing:
        out["valid_rate"] = sum(bool(g["citations_valid"]) for g in citing) / len(citing)
        if all(g.get("cites_relevant") is not None for g in citing):
            out["relevant_rate"] = sum(bool(g["cites_relevant"]) for g in citing) / len(citing)
    return out


def retrieval_report(with_retrieval: Sequence, without_retrieval: Sequence, questions: Sequence[dict],
                     key: str = "topic") -> dict[str, Any]:
    """With vs without retrieval on the same questions (:class:`~course_utils.rag.generation.RAGAnswer`
    lists, and question dicts with ``gold`` and ``topics``).

    ``gold_rate_with`` / ``gold_rate_without``: the fraction of answers that contain the question's
    gold fact (:func:`groundedness`), and ``gold_gain`` their difference; then, for the answers with
    retrieval, :func:`citation_summary`: ``citing_rate``, ``n_citing``, and over the citing answers
    only ``valid_rate`` and ``relevant_rate`` (None when no answer cites). Also ``n_questions``.
    """
    if not len(with_retrieval) == len(without_retrieval) == len(questions):
        raise ValueError(f"with_retrieval ({len(with_retrieval)}), without_retrieval ({len(without_retrieval)}) and "
                         f"questions ({len(questions)}) must have the same length")
    if not questions:
        raise ValueError("questions is empty: nothing to report")
    opened = [groundedness(a, q["gold"], q["topics"], key) for a, q in zip(with_retrieval, questions)]
    closed = [groundedness(a, q["gold"]) for a, q in zip(without_retrieval, questions)]
    gold_with = sum(g["contains_gold"] for g in opened) / len(questions)
    gold_without = sum(g["contains_gold"] for g in closed) / len(questions)
    return {"n_questions": len(questions), "gold_rate_with": gold_with, "gold_rate_without": gold_without,
            "gold_gain": gold_with - gold_without, **citation_summary(opened)}
