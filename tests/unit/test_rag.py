"""course_utils.rag: chunking, loaders, cached embeddings, FAISS/BM25/hybrid retrieval, RRF,
reranking, generation with citations and evaluation — checked against faiss, bm25s and
the real offline models on a small slice of the pydoc corpus."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest

from course_utils.rag import (
    BM25Retriever,
    CachedEmbedder,
    DenseRetriever,
    Document,
    HybridRetriever,
    LLMReranker,
    VectorIndex,
    answer_with_sources,
    build_hnsw_index,
    chunk_documents,
    chunk_tokens,
    citation_summary,
    embed_texts,
    evaluate_rankings,
    groundedness,
    hit_at_k,
    hit_rate_at_k,
    index_recall_at_k,
    iterative_answer,
    load_markdown_folder,
    load_notebook_markdown,
    load_pdf,
    load_pydoc_corpus,
    load_questions,
    parse_citations,
    recall_at_k,
    reciprocal_rank,
    reciprocal_rank_fusion,
    retrieval_report,
    semantic_chunks,
    split_markdown,
    unique_sources,
    window_spans,
)
from course_utils.rag.chunking import default_tokenizer
from course_utils.rag.generation import RAGAnswer, rag_messages
from course_utils.rag.retrievers import Hit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL_TOPICS = ["pass", "break", "continue", "lambda", "assert", "del", "global", "nonlocal", "await",
                "bltin-null-object", "shifting", "bitwise"]


# ---------------------------------------------------------------- chunking

def test_window_spans_examples_and_errors():
    assert window_spans(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert window_spans(10, 5, 0) == [(0, 5), (5, 10)]
    assert window_spans(3, 8, 2) == [(0, 3)]
    assert window_spans(0, 4, 1) == []
    assert window_spans(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    for bad in [dict(size=0, overlap=0), dict(size=4, overlap=4), dict(size=4, overlap=-1), dict(size=2.5, overlap=0)]:
        with pytest.raises(ValueError):
            window_spans(10, **bad)
    with pytest.raises(ValueError, match="n_tokens"):
        window_spans(-1, 4, 1)


@pytest.mark.parametrize("seed", range(5))
def test_window_spans_cover_with_exact_overlap(seed):
    rng = random.Random(seed)
    n, size = rng.randint(1, 500), rng.randint(1, 64)
    overlap = rng.randint(0, size - 1)
    spans = window_spans(n, size, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(0 < e - s <= size for s, e in spans)
    for (s0, e0), (s1, _e1) in zip(spans, spans[1:]):
        assert s1 - s0 == size - overlap and e0 - s1 == overlap  # windows before the last are full
    assert chunk_tokens(list(range(n)), size, overlap) == [list(range(s, e)) for s, e in spans]


def test_chunk_documents_token_windows_keep_metadata_and_overlap():
    from course_utils.rag.chunking import token_offsets

    tok = default_tokenizer()
    docs = load_pydoc_corpus(["try", "pass"])
    chunks = chunk_documents(docs, size=64, overlap=16)
    for doc in docs:
        mine = [c for c in chunks if c.metadata["doc_id"] == doc.id]
        offsets = token_offsets(doc.text, tok)
        spans = window_spans(len(offsets), 64, 16)
        assert len(mine) == len(spans) >= 2
        for c, (s, e) in zip(mine, spans):
            # each chunk is exactly the document text from its first token's start to its last token's end
            assert (c.metadata["start"], c.metadata["end"]) == (offsets[s][0], offsets[e - 1][1])
            assert c.text == doc.text[c.metadata["start"]:c.metadata["end"]]
            assert c.metadata["topic"] == doc.metadata["topic"] and c.id == f"{doc.id}#{c.metadata['chunk']}"
            # re-tokenising a slice may split its first word differently, never by more than a few pieces
            assert len(tok(c.text, add_special_tokens=False)["input_ids"]) <= 64 + 2
        for a, b in zip(mine, mine[1:]):  # consecutive chunks share exactly `overlap` tokens of text
            shared = doc.text[b.metadata["start"]:a.metadata["end"]]
            assert shared and len([o for o in offsets if b.metadata["start"] <= o[0] < a.metadata["end"]]) == 16


def test_chunk_documents_errors():
    with pytest.raises(ValueError, match="empty"):
        chunk_documents([])
    with pytest.raises(TypeError):
        chunk_documents(["just a string"])
    with pytest.raises(ValueError, match="method"):
        chunk_documents(load_pydoc_corpus(["pass"]), method="bogus")
    with pytest.raises(ValueError, match="embed"):
        chunk_documents(load_pydoc_corpus(["pass"]), method="semantic")
    with pytest.raises(ValueError, match="duplicate"):
        chunk_documents([Document("a", "x"), Document("a", "y")])


def test_split_markdown_sections_ignore_code_fences():
    text = "intro\n# Title\nbody one\n```\n# not a heading\n```\n## Sub\nbody two\n"
    sections = split_markdown(text)
    assert [t for t, _, _ in sections] == ["", "Title", "Sub"]
    assert "# not a heading" in text[sections[1][1]:sections[1][2]]
    chunks = chunk_documents([Document("m", text, {"source": "m.md"})], method="markdown", size=50, overlap=5)
    assert [c.metadata.get("section") for c in chunks] == ["", "Title", "Sub"]
    assert all(c.metadata["source"] == "m.md" for c in chunks)


def test_semantic_chunks_break_at_topic_shift():
    text = "Cats purr. Cats nap a lot. Cats chase mice. Cars need fuel. Cars have wheels. Cars go fast."

    def embed(sents):  # a transparent embedder: cat sentences vs car sentences
        return np.array([[1.0, 0.1 * i] if "Cat" in s else [0.1 * i, 1.0] for i, s in enumerate(sents)])

    spans = semantic_chunks(text, embed, percentile=20, max_tokens=100)
    assert [text[s:e].strip() for s, e in spans] == ["Cats purr. Cats nap a lot. Cats chase mice.",
                                                     "Cars need fuel. Cars have wheels. Cars go fast."]
    small = semantic_chunks(text, embed, percentile=0, max_tokens=8)  # size limit alone also splits
    assert len(small) >= 3


# ---------------------------------------------------------------- loaders

def test_markdown_and_notebook_loaders(tmp_path):
    import nbformat

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# A\ntext a")
    (tmp_path / "sub" / "b.md").write_text("# B\ntext b")
    docs = load_markdown_folder(tmp_path)
    assert [d.metadata["source"] for d in docs] == ["a.md", "sub/b.md"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Intro\nhello"),
                                         nbformat.v4.new_code_cell("x = 1  # code is skipped"),
                                         nbformat.v4.new_markdown_cell("bye")])
    nbformat.write(nb, tmp_path / "n.ipynb")
    [d] = load_notebook_markdown(tmp_path)
    assert d.text == "# Intro\nhello\n\nbye" and d.metadata["source"] == "n.ipynb"
    with pytest.raises(ValueError, match="not a folder"):
        load_markdown_folder(tmp_path / "missing")


def test_pdf_loader_reads_real_text(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    path = tmp_path / "doc.pdf"
    with PdfPages(path) as pdf:
        for words in ["Reciprocal rank fusion", "Hierarchical navigable small world"]:
            fig = Figure()
            fig.text(0.1, 0.5, words)
            pdf.savefig(fig)
    docs = load_pdf(path)
    assert [d.metadata["page"] for d in docs] == [1, 2]
    assert "Reciprocal rank fusion" in docs[0].text and "small world" in docs[1].text
    with pytest.raises(ValueError, match="not a file"):
        load_pdf(tmp_path / "nope.pdf")


def test_pydoc_corpus():
    docs = load_pydoc_corpus()
    assert len(docs) == 79 and docs[0].metadata["topic"] == "assert"
    with pytest.raises(ValueError, match="unknown"):
        load_pydoc_corpus(["no-such-topic"])


# ---------------------------------------------------------------- embeddings and indexes

@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return CachedEmbedder(cache=tmp_path_factory.mktemp("emb") / "cache.sqlite", device="cpu")


def test_cached_embedder_matches_model_and_embeds_once(embedder):
    texts = ["a list is mutable", "tuples are immutable", "a list is mutable"]
    before = dict(embedder.stats)
    v = embedder.encode(texts)
    ref = embedder.model.encode(texts[:2], normalize_embeddings=True)
    np.testing.assert_allclose(v[:2], ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.stats["computed"] - before["computed"] == 2  # the repeat is embedded once
    again = CachedEmbedder(embedder.model, cache=embedder.cache.path, name=embedder.name)  # a new process would do the same
    np.testing.assert_array_equal(again.encode(texts), v)
    assert again.stats == {"computed": 0, "cached": 3}
    with pytest.raises(TypeError):
        embedder.encode("not a list")
    assert "minilm" in CachedEmbedder(embedder.model, cache=False).name.lower()  # a loaded model: keyed by its path


def test_embed_texts_unit_rows_as_the_model_normalises_them(embedder):
    texts = ["a list is mutable", "tuples are immutable", "the pass statement does nothing"]
    v = embed_texts(embedder.model, texts)
    assert v.dtype == np.float32 and v.shape == (3, embedder.dim)
    raw = embedder.model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(v, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(v, CachedEmbedder(embedder.model, cache=False).encode(texts), atol=1e-6)
    assert embed_texts(embedder.model, []).shape == (0, embedder.dim)


def test_build_hnsw_index_parameters_recall_and_errors():
    import faiss

    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:30] + 0.05 * rng.normal(size=(30, 16)).astype(np.float32)
    index = build_hnsw_index(x, m=12, ef_construction=80, ef_search=40)
    assert isinstance(index, faiss.IndexHNSWFlat) and index.ntotal == 800
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert (index.hnsw.efConstruction, index.hnsw.efSearch) == (80, 40)
    assert index.hnsw.nb_neighbors(0) == 2 * 12  # level 0 keeps 2M links, as faiss.IndexHNSWFlat(d, M) does
    exact = faiss.IndexFlatIP(16)
    exact.add(x)
    assert index_recall_at_k(index.search(q, 10)[1], exact.search(q, 10)[1], 10) >= 0.9
    with pytest.raises(ValueError, match="vectors"):
        build_hnsw_index(np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="m must be a positive int"):
        build_hnsw_index(x, m=0)


def test_vector_index_flat_exact_and_hnsw_recall_and_save(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:20] + 0.1 * rng.normal(size=(20, 32)).astype(np.float32)
    flat, hnsw = VectorIndex(32, "flat"), VectorIndex(32, "hnsw", hnsw_m=16)
    flat.add(x)
    hnsw.add(x)
    s, ids = flat.search(q, 10)
    ref = np.argsort(-(q @ x.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, ref, axis=1), atol=1e-5)
    assert index_recall_at_k(hnsw.search(q, 10)[1], ids, 10) >= 0.9
    hnsw.save(tmp_path / "idx")
    back = VectorIndex.load(tmp_path / "idx")
    assert back.kind == "hnsw" and len(back) == 500
    np.testing.assert_array_equal(back.search(q, 10)[1], hnsw.search(q, 10)[1])
    assert flat.search(q[:1], 10_000)[1].shape == (1, 500)
    with pytest.raises(ValueError, match="shape"):
        flat.search(np.zeros((1, 7)), 3)
    with pytest.raises(ValueError, match="kind"):
        VectorIndex(32, "ivf")


# ---------------------------------------------------------------- RRF

def test_rrf_hand_computed_duplicates_empty_and_ties():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    expect = {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62}
    assert [i for i, _ in fused] == ["b", "a", "d", "c"]
    assert all(abs(s - expect[i]) < 1e-12 for i, s in fused)
    assert reciprocal_rank_fusion([["a", "a", "b"]], k=0) == [("a", 1.0), ("b", 1 / 3)]  # repeat counts once
    assert reciprocal_rank_fusion([[], []]) == [] and reciprocal_rank_fusion([]) == []
    assert [i for i, _ in reciprocal_rank_fusion([["x"], ["y"]])] == ["x", "y"]  # tie: first appearance
    assert [i for i, _ in reciprocal_rank_fusion([["x"], ["y"]], weights=[1, 2])] == ["y", "x"]
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([["a"]], weights=[1, 2])
    with pytest.raises(ValueError, match="k must"):
        reciprocal_rank_fusion([["a"]], k=-1)


# ---------------------------------------------------------------- retrievers

@pytest.fixture(scope="module")
def small_docs():
    return load_pydoc_corpus(SMALL_TOPICS)


@pytest.fixture(scope="module")
def retrievers(small_docs, embedder):
    opts = dict(chunk_size=120, overlap=20)
    return {"dense": DenseRetriever.from_documents(small_docs, embedder=embedder, **opts),
            "hnsw": DenseRetriever.from_documents(small_docs, embedder=embedder, index="hnsw", **opts),
            "bm25": BM25Retriever.from_documents(small_docs, **opts),
            "hybrid": HybridRetriever.from_documents(small_docs, embedder=embedder, **opts)}


@pytest.mark.parametrize("name", ["dense", "hnsw", "bm25", "hybrid"])
def test_retriever_contract(retrievers, name):
    r = retrievers[name]
    hits = r.search("How do I break out of a loop?", k=3)
    assert len(hits) == 3 and all(isinstance(h, Hit) for h in hits)
    assert hits[0].metadata["topic"] == "break"
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    everything = r.search("anonymous function expression", k=10_000)
    assert len(everything) == len(r.chunks) and len({h.chunk_id for h in everything}) == len(r.chunks)
    assert all(a.score >= b.score for a, b in zip(everything, everything[1:]))
    for bad in ["", "   "]:
        with pytest.raises(ValueError, match="query must be a non-empty string"):
            r.search(bad, k=3)
    with pytest.raises(ValueError, match="k must"):
        r.search("loop", k=0)
    with pytest.raises(TypeError):
        r.search(None, k=3)


@pytest.mark.parametrize("cls", [DenseRetriever, BM25Retriever, HybridRetriever])
def test_empty_corpus_is_a_clear_error(cls, embedder):
    opts = {} if cls is BM25Retriever else {"embedder": embedder}
    with pytest.raises(ValueError, match="empty"):
        cls.from_documents([], **opts)
    with pytest.raises(ValueError, match="empty"):
        cls.from_documents([Document("x", "   ")], **opts)


def test_bm25_matches_bm25s_reference(retrievers):
    import bm25s
    import Stemmer

    r = retrievers["bm25"]
    stem = Stemmer.Stemmer("english")
    ref = bm25s.BM25()
    ref.index(bm25s.tokenize([c.text for c in r.chunks], stopwords="en", stemmer=stem, show_progress=False),
              show_progress=False)
    q = "shift bits of an integer to the left"
    docs, scores = ref.retrieve(bm25s.tokenize([q], stopwords="en", stemmer=stem, show_progress=False), k=5,
                                show_progress=False)
    hits = r.search(q, k=5)
    assert [h.chunk_id for h in hits] == [r.chunks[i].id for i in docs[0]]
    np.testing.assert_allclose([h.score for h in hits], scores[0], rtol=1e-5)
    assert r.search("the of and", k=3)[0].score == 0.0  # only stopwords: no evidence, all scores 0


def test_hybrid_is_rrf_of_its_parts(retrievers):
    h = retrievers["hybrid"]
    q = "bitwise exclusive or"
    dense = [x.chunk_id for x in h.dense.search(q, h.candidates)]
    lexical = [x.chunk_id for x in h.bm25.search(q, h.candidates) if x.score > 0]
    expect = reciprocal_rank_fusion([dense, lexical], k=h.rrf_k, weights=h.weights)[:4]
    got = h.search(q, k=4)
    assert [x.chunk_id for x in got] == [i for i, _ in expect]
    np.testing.assert_allclose([x.score for x in got], [s for _, s in expect])


def test_dense_save_load_roundtrip(retrievers, embedder, tmp_path):
    r = retrievers["hnsw"]
    r.save(tmp_path / "store")
    back = DenseRetriever.load(tmp_path / "store", embedder=embedder)
    q = "placeholder statement that does nothing"
    assert [(h.chunk_id, h.metadata) for h in back.search(q, 4)] == [(h.chunk_id, h.metadata) for h in r.search(q, 4)]
    assert json.loads((tmp_path / "store" / "index.json").read_text())["kind"] == "hnsw"


# ---------------------------------------------------------------- evaluation

def test_ranking_metrics_hand_computed():
    assert hit_at_k(["a", "b", "c"], {"c"}, 2) == 0.0 and hit_at_k(["a", "b", "c"], {"c"}, 3) == 1.0
    assert reciprocal_rank(["a", "b", "c"], {"b", "c"}) == 0.5 and reciprocal_rank([], {"a"}) == 0.0
    assert recall_at_k(["a", "b", "c"], {"a", "c", "z"}, 3) == pytest.approx(2 / 3)
    assert hit_rate_at_k([["a"], ["b"], []], [{"a"}, {"a"}, {"a"}], 1) == pytest.approx(1 / 3)
    m = evaluate_rankings([["a", "b"], ["c", "a"]], [{"a"}, {"a"}], ks=(1, 2))
    assert m == {"hit@1": 0.5, "hit@2": 1.0, "recall@1": 0.5, "recall@2": 1.0, "mrr": 0.75}
    with pytest.raises(ValueError, match="k must"):
        hit_at_k(["a"], {"a"}, 0)
    with pytest.raises(ValueError, match="same length"):
        hit_rate_at_k([["a"]], [], 1)
    hits = [Hit("t", 1.0, {"topic": "x"}), Hit("t", 0.9, {"topic": "x"}), Hit("t", 0.8, {"topic": "y"})]
    assert unique_sources(hits) == ["x", "y"]


def test_question_set_is_labelled_with_real_topics():
    from pydoc_data.topics import topics

    qs = load_questions()
    assert len(qs) >= 60 and len({q["question"] for q in qs}) == len(qs)
    for q in qs:
        assert q["topics"] and all(t in topics for t in q["topics"]), q
        norm = lambda s: " ".join(s.lower().split())  # noqa: E731
        assert any(norm(q["gold"]) in norm(topics[t]) for t in q["topics"]), q  # the gold fact is in the docs


def test_groundedness_and_citations():
    assert parse_citations("See [1] and [3, 2]; again [1].") == [1, 3, 2]
    assert parse_citations("no citations") == []
    srcs = [Hit("a", 1, {"topic": "try"}), Hit("b", 1, {"topic": "with"})]
    ok = groundedness(RAGAnswer("q", "Use a Finally clause [2].", srcs, [2]), "finally", relevant={"with"})
    assert ok == {"contains_gold": True, "n_citations": 1, "citations_valid": True, "cites_relevant": True}
    bad = groundedness(RAGAnswer("q", "No idea [5].", srcs, [5]), "finally", relevant={"try"})
    assert not bad["contains_gold"] and not bad["citations_valid"] and not bad["cites_relevant"]
    silent = groundedness(RAGAnswer("q", "Use finally.", srcs, []), "finally", relevant={"try"})
    assert silent["citations_valid"] and not silent["cites_relevant"]  # vacuously valid: nothing cited

    summary = citation_summary([ok, bad, silent])
    assert summary == {"citing_rate": 2 / 3, "n_citing": 2, "valid_rate": 0.5, "relevant_rate": 0.5}
    assert citation_summary([silent, silent]) == {"citing_rate": 0.0, "n_citing": 0, "valid_rate": None,
                                                  "relevant_rate": None}
    unlabelled = groundedness(RAGAnswer("q", "x [1]", srcs, [1]), "finally")
    assert citation_summary([unlabelled])["relevant_rate"] is None
    with pytest.raises(ValueError, match="gradings"):
        citation_summary([])


def test_retrieval_report_with_vs_without_retrieval():
    srcs = [Hit("a", 1, {"topic": "typesseq"}), Hit("b", 1, {"topic": "pass"})]
    questions = [{"gold": "mutable", "topics": ["typesseq"]}, {"gold": "the pass", "topics": ["pass"]},
                 {"gold": "finally", "topics": ["try"]}]
    with_r = [RAGAnswer("q1", "Lists are MUTABLE [1].", srcs, [1]),
              RAGAnswer("q2", "Use  The\nPass statement [3].", srcs, [3]),  # gold up to case and spaces; bad citation
              RAGAnswer("q3", "I do not know.", srcs, [])]
    without = [RAGAnswer("q1", "Lists can change.", [], []), RAGAnswer("q2", "the pass", [], []),
               RAGAnswer("q3", "no", [], [])]
    report = retrieval_report(with_r, without, questions)
    assert report == pytest.approx({"n_questions": 3, "gold_rate_with": 2 / 3, "gold_rate_without": 1 / 3,
                                    "gold_gain": 1 / 3, "citing_rate": 2 / 3, "n_citing": 2, "valid_rate": 0.5,
                                    "relevant_rate": 0.5})
    silent = retrieval_report(with_r[2:], without[2:], questions[2:])
    assert silent["citing_rate"] == 0 and silent["valid_rate"] is None and silent["relevant_rate"] is None
    with pytest.raises(ValueError, match="same length"):
        retrieval_report(with_r, without[:2], questions)
    with pytest.raises(ValueError, match="empty"):
        retrieval_report([], [], [])


# ---------------------------------------------------------------- the LLM side

@pytest.fixture(scope="module")
def lm():
    from course_utils.models import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct", device="cpu")


def test_context_trimming_warns_and_keeps_question(lm):
    _, tok = lm
    hits = [Hit("word " * 400, 1.0, {"topic": f"t{i}"}, f"c{i}") for i in range(3)]
    question = "What does the pass statement do?"
    with pytest.warns(UserWarning, match="context trimmed"):
        messages, kept = rag_messages(question, hits, tok, max_prompt_tokens=600)
    assert 1 <= len(kept) < 3 and messages[-1]["content"].endswith(f"Question: {question}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rag_messages(question, hits[:1], tok, max_prompt_tokens=2000)  # fits: no warning
    with pytest.raises(ValueError, match="question is"):
        rag_messages("why " * 300, hits, tok, max_prompt_tokens=100)


def test_llm_reranker_batched_scores_match_single_pass(lm):
    import torch

    from course_utils.rag.llm import chat_ids, relevance_prompt

    model, tok = lm
    passages = ["Bitwise XOR is written with a caret.", "pass does nothing."]  # the second is left-padded
    q = "What does pass do?"
    batched = LLMReranker(model, tok, batch_size=2).score(q, passages)
    ids = torch.tensor([chat_ids(tok, relevance_prompt(q, passages[1]))])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
    yes, no = tok.encode("Yes", add_special_tokens=False)[0], tok.encode("No", add_special_tokens=False)[0]
    assert batched[1] == pytest.approx((logp[yes] - logp[no]).item(), abs=1e-3)


def test_rerank_orders_by_score(lm):
    class Fixed(LLMReranker):
        def score(self, query, passages):
            return np.array([len(p) for p in passages], dtype=np.float32)

    hits = [Hit(t, 0.0, {"topic": t}, t) for t in ["bb", "a", "cccc"]]
    out = Fixed(*lm).rerank("q", hits, top_n=2)
    assert [h.chunk_id for h in out] == ["cccc", "bb"] and [h.rank for h in out] == [1, 2]
    assert Fixed(*lm).rerank("q", []) == []


def test_answer_with_sources_real_model(lm, retrievers):
    model, tok = lm
    hits = retrievers["bm25"].search("What does pass do?", k=1)
    ans = answer_with_sources("What does pass do?", hits, model, tok, max_new_tokens=4)
    assert isinstance(ans.text, str) and ans.sources == hits
    assert ans.citations == parse_citations(ans.text)


def test_iterative_retrieval_retrieves_again_when_insufficient(lm, retrievers, monkeypatch):
    import course_utils.rag.generation as gen

    replies = iter(["The sources are INSUFFICIENT.", "It does nothing [2]."])
    monkeypatch.setattr(gen, "generate", lambda *a, **k: next(replies))
    final, rounds = iterative_answer("What does pass do?", retrievers["bm25"], lm[0], lm[1], k=1,
                                     max_new_tokens=4)
    assert rounds == 2 and len(final.sources) == 2 and final.citations == [2]
    assert final.sources[0].chunk_id != final.sources[1].chunk_id
