"""Generation with attribution: numbered sources in the prompt, citations parsed back.

The prompt lists the retrieved chunks as ``[1] …``, ``[2] …`` and asks the model to answer
from them and cite by number. :func:`parse_citations` reads the ``[n]`` markers back;
a citation is *valid* when ``1 ≤ n ≤ number of sources``.

Context budget: prompt tokens + ``max_new_tokens`` must fit the model's context. Sources are
dropped from the end (lowest ranked first) and the last kept one trimmed, with a warning;
the question is never truncated — if the question alone does not fit, a ``ValueError``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from course_utils import checks
from course_utils.rag.llm import chat_ids, generate
from course_utils.rag.retrievers import Hit

SYSTEM = ("You answer questions about Python using only the numbered sources. "
          "Cite the sources you use like [1]. If the sources do not contain the answer, say INSUFFICIENT.")
SYSTEM_NO_RETRIEVAL = "You answer questions about Python briefly and accurately."


@dataclass
class RAGAnswer:
    """An answer, the sources it was given, and the source numbers it cites."""

    question: str
    text: str
    sources: list[Hit] = field(default_factory=list)
    citations: list[int] = field(default_factory=list)

    @property
    def valid_citations(self) -> list[int]:
        return [c for c in self.citations if 1 <= c <= len(self.sources)]

    @property
    def cited_sources(self) -> list[Hit]:
        return [self.sources[c - 1] for c in self.valid_citations]


def parse_citations(text: str) -> list[int]:
    """Source numbers cited as ``[n]`` or ``[n, m]`` in ``text``, in order, without repeats."""
    out: list[int] = []
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", text):
        for n in group.split(","):
            if int(n) not in out:
                out.append(int(n))
    return out


def context_limit(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048))


def source_label(hit: Hit) -> str:
    meta = hit.metadata
    return str(meta.get("topic") or meta.get("source") or hit.chunk_id)


def rag_messages(question: str, hits: list[Hit], tokenizer, *, max_prompt_tokens: int) -> tuple[list[dict], list[Hit]]:
    """Chat messages with numbered sources fitted into ``max_prompt_tokens`` → (messages, kept hits)."""
    checks.string("question", question, non_empty=True)

    def build(sources: list[tuple[Hit, str]]) -> list[dict]:
        block = "\n\n".join(f"[{i}] ({source_label(h)}) {text}" for i, (h, text) in enumerate(sources, start=1))
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Sources:\n{block}\n\nQuestion: {question}"}]

    base = len(chat_ids(tokenizer, build([])))
    if base > max_prompt_tokens:
        raise ValueError(f"question is {base} prompt tokens, more than the {max_prompt_tokens} the context allows; "
                         "shorten the question or raise max_prompt_tokens")
    kept: list[tuple[Hit, str]] = []
    for h in hits:
        trial = kept + [(h, h.text)]
        if len(chat_ids(tokenizer, build(trial))) <= max_prompt_tokens:
            kept = trial
            continue
        room = max_prompt_tokens - len(chat_ids(tokenizer, build(kept + [(h, "")])))
        if room > 16:
            ids = tokenizer.encode(h.text, add_special_tokens=False)[: room - 4]
            kept.append((h, tokenizer.decode(ids)))
        warnings.warn(f"context trimmed: kept {len(kept)} of {len(hits)} sources to fit {max_prompt_tokens} "
                      "prompt tokens (the question is kept whole)", stacklevel=2)
        break
    return build(kept), [h for h, _ in kept]


def answer_with_sources(question: str, hits: list[Hit], model, tokenizer, *, max_new_tokens: int = 64,
                        max_prompt_tokens: int | None = None) -> RAGAnswer:
    """Answer ``question`` from ``hits``, returning the text and the sources it cites."""
    limit = max_prompt_tokens or context_limit(model) - max_new_tokens
    messages, kept = rag_messages(question, hits, tokenizer, max_prompt_tokens=limit)
    text = generate(model, tokenizer, messages, max_new_tokens=max_new_tokens)
    return RAGAnswer(question, text, kept, parse_citations(text))


def answer_without_retrieval(question: str, model, tokenizer, *, max_new_tokens: int = 64) -> RAGAnswer:
    """The closed-book baseline: the same model, no sources."""
    checks.string("question", question, non_empty=True)
    messages = [{"role": "system", "content": SYSTEM_NO_RETRIEVAL}, {"role": "user", "content": question}]
    text = generate(model, tokenizer, messages, max_new_tokens=max_new_tokens)
    return RAGAnswer(question, text, [], parse_citations(text))


def rag_answer(question: str, retriever, model, tokenizer, *, k: int = 3, max_new_tokens: int = 64,
               reranker=None, candidates: int = 10) -> RAGAnswer:
    """Retrieve ``k`` chunks (optionally reranking ``candidates`` first) and answer from them."""
    hits = retriever.search(question, candidates if reranker else k)
    if reranker is not None:
        hits = reranker.rerank(question, hits, top_n=k)
    return answer_with_sources(question, hits, model, tokenizer, max_new_tokens=max_new_tokens)


INSUFFICIENT_MARKERS = ("insufficient", "do not contain", "don't contain", "does not contain", "not enough information",
                        "cannot answer", "can't answer", "i don't know")


def says_insufficient(text: str) -> bool:
    low = text.lower()
    return any(m in low for m in INSUFFICIENT_MARKERS)


def iterative_answer(question: str, retriever, model, tokenizer, *, k: int = 3, max_rounds: int = 2,
                     max_new_tokens: int = 64) -> tuple[RAGAnswer, int]:
    """Iterative retrieval: when the draft answer says the context is insufficient, retrieve
    again with a query expanded by the draft, skipping chunks already shown, and re-answer
    from the enlarged context. Returns ``(answer, rounds used)``."""
    checks.positive_int(max_rounds=max_rounds)
    hits = retriever.search(question, k)
    ans = answer_with_sources(question, hits, model, tokenizer, max_new_tokens=max_new_tokens)
    rounds = 1
    while rounds < max_rounds and says_insufficient(ans.text):
        seen = {h.chunk_id for h in hits}
        more = [h for h in retriever.search(f"{question} {ans.text}", k + len(seen)) if h.chunk_id not in seen][:k]
        if not more:
            break
        hits = hits + more
        ans = answer_with_sources(question, hits, model, tokenizer, max_new_tokens=max_new_tokens)
        rounds += 1
    return ans, rounds
