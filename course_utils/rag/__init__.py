"""Retrieval-augmented generation: documents, chunking, cached embeddings, FAISS / BM25 /
hybrid retrieval, LLM reranking, HyDE, generation with citations, and evaluation.

>>> from course_utils.rag import load_pydoc_corpus, HybridRetriever
>>> retriever = HybridRetriever.from_documents(load_pydoc_corpus())   # doctest: +SKIP
>>> [h.metadata["topic"] for h in retriever.search("how do I swallow an exception?", k=3)]  # doctest: +SKIP
"""

from course_utils.rag.chunking import (
                                       Chunk,
                                       chunk_documents,
                                       chunk_text,
                                       chunk_tokens,
                                       semantic_chunks,
                                       split_markdown,
                                       window_spans,
)
from course_utils.rag.documents import (
                                       Document,
                                       load_markdown_folder,
                                       load_notebook_markdown,
                                       load_pdf,
                                       load_pydoc_corpus,
)
from course_utils.rag.embeddings import CachedEmbedder, EmbeddingCache, embed_texts
from course_utils.rag.evaluation import (
                                       citation_summary,
                                       evaluate_rankings,
                                       evaluate_retriever,
                                       groundedness,
                                       hit_at_k,
                                       hit_rate_at_k,
                                       load_questions,
                                       recall_at_k,
                                       reciprocal_rank,
                                       retrieval_report,
                                       unique_sources,
)
from course_utils.rag.generation import (
                                       RAGAnswer,
                                       answer_with_sources,
                                       answer_without_retrieval,
                                       iterative_answer,
                                       parse_citations,
                                       rag_answer,
)
from course_utils.rag.index import VectorIndex, build_hnsw_index
from course_utils.rag.index import recall_at_k as index_recall_at_k
from course_utils.rag.llm import CrossEncoderReranker, LLMReranker, hyde_search, hypothetical_answer
from course_utils.rag.retrievers import (
                                       BM25Retriever,
                                       DenseRetriever,
                                       Hit,
                                       HybridRetriever,
                                       reciprocal_rank_fusion,
)

__all__ = [
    "Chunk", "chunk_documents", "chunk_text", "chunk_tokens", "semantic_chunks", "split_markdown", "window_spans",
    "Document", "load_markdown_folder", "load_notebook_markdown", "load_pdf", "load_pydoc_corpus",
    "CachedEmbedder", "EmbeddingCache", "embed_texts",
    "citation_summary", "evaluate_rankings", "evaluate_retriever", "groundedness", "hit_at_k", "hit_rate_at_k", "load_questions",
    "recall_at_k", "reciprocal_rank", "retrieval_report", "unique_sources",
    "RAGAnswer", "answer_with_sources", "answer_without_retrieval", "iterative_answer", "parse_citations", "rag_answer",
    "VectorIndex", "build_hnsw_index", "index_recall_at_k",
    "CrossEncoderReranker", "LLMReranker", "hyde_search", "hypothetical_answer",
    "BM25Retriever", "DenseRetriever", "Hit", "HybridRetriever", "reciprocal_rank_fusion",
]
