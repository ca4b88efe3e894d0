"""The LLM side of RAG: chat prompts, greedy generation, relevance scoring (reranking), HyDE.

All functions take a ``(model, tokenizer)`` pair from ``course_utils.models.load_causal_lm``
(the offline SmolLM2-135M-Instruct by default, ChatML template, 8192-token context).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from course_utils import checks


def chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    if hasattr(ids, "keys"):  # BatchEncoding in transformers 5
        ids = ids["input_ids"]
    return list(ids)


def generate(model, tokenizer, messages: list[dict], *, max_new_tokens: int = 64) -> str:
    """Greedy decoding of the assistant's reply to ``messages``."""
    import torch

    checks.positive_int(max_new_tokens=max_new_tokens)
    ids = torch.tensor([chat_ids(tokenizer, messages)], device=model.device)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def relevance_prompt(query: str, passage: str) -> list[dict]:
    return [
        {"role": "system", "content": "You judge whether a passage helps answer a question. Reply Yes or No."},
        {"role": "user", "content": f"Passage:\n{passage}\n\nQuestion: {query}\n\n"
                                    "Does the passage help answer the question? Answer Yes or No."},
    ]


class LLMReranker:
    """Rerank candidates by the LLM's belief that a passage is relevant.

    ``score(q, p) = log P("Yes" | prompt(q, p)) − log P("No" | prompt(q, p))`` at the first
    token of the assistant's reply: a pointwise relevance judgement, computed in one forward
    pass per passage (batched, left-padded).
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 4, max_passage_tokens: int = 300):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_passage_tokens = batch_size, max_passage_tokens
        self.yes = tokenizer.encode("Yes", add_special_tokens=False)[0]
        self.no = tokenizer.encode("No", add_special_tokens=False)[0]

    def _trim(self, passage: str) -> str:
        ids = self.tokenizer.encode(passage, add_special_tokens=False)
        return passage if len(ids) <= self.max_passage_tokens else self.tokenizer.decode(ids[:self.max_passage_tokens])

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        import torch

        rows = [chat_ids(self.tokenizer, relevance_prompt(query, self._trim(p))) for p in passages]
        out = []
        pad = self.tokenizer.pad_token_id
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i:i + self.batch_size]
            width = max(len(r) for r in batch)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in batch], device=self.model.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch], device=self.model.device)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            out.extend((logp[:, self.yes] - logp[:, self.no]).tolist())
        return np.asarray(out, dtype=np.float32)

    def rerank(self, query: str, hits: list, top_n: int | None = None) -> list:
        """Reorder ``hits`` by relevance score (their ``score`` becomes that score)."""
        from course_utils.rag.retrievers import Hit

        if not hits:
            return []
        s = self.score(query, [h.text for h in hits])
        order = np.argsort(-s, kind="stable")[: top_n or len(hits)]
        return [Hit(hits[i].text, float(s[i]), hits[i].metadata, hits[i].chunk_id, r)
                for r, i in enumerate(order, start=1)]


class CrossEncoderReranker:
    """Rerank with a sentence-transformers cross-encoder (needs the model online or cached),
    e.g. ``"cross-encoder/ms-marco-MiniLM-L-6-v2"``."""

    def __init__(self, model_id: str, device: str = "auto"):
        from sentence_transformers import CrossEncoder

        from course_utils.runtime import resolve_device

        self.model = CrossEncoder(model_id, device=resolve_device(device))

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.predict([(query, p) for p in passages]), dtype=np.float32)

    rerank = LLMReranker.rerank


def hypothetical_answer(query: str, model, tokenizer, *, max_new_tokens: int = 64) -> str:
    """HyDE's first step: let the LLM write a passage that would answer ``query``."""
    messages = [
        {"role": "system", "content": "You write short passages of Python documentation."},
        {"role": "user", "content": f"Write a short passage of the Python reference documentation that "
                                    f"answers this question: {query}"},
    ]
    return generate(model, tokenizer, messages, max_new_tokens=max_new_tokens)


def hyde_search(query: str, dense, model, tokenizer, k: int = 5, *, max_new_tokens: int = 64,
                include_query: bool = True) -> list:
    """HyDE (Gao et al., 2022): search with the embedding of a hypothetical answer.

    ``v = normalize(e(answer) + e(query))`` when ``include_query`` (the query anchors a
    hallucinated answer), else ``e(answer)``. ``dense`` is a :class:`DenseRetriever` or a
    :class:`HybridRetriever` (its dense half is used).
    """
    dense = getattr(dense, "dense", dense)
    checks.string("query", query, non_empty=True)
    answer = hypothetical_answer(query, model, tokenizer, max_new_tokens=max_new_tokens)
    v = dense.embedder.encode_query(answer)
    if include_query:
        v = v + dense.embedder.encode_query(query)
    v = v / max(float(np.linalg.norm(v)), 1e-12)
    return dense.search_vector(v, k)
