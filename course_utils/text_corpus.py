"""A real pretraining corpus that ships with every CPython: Python's own documentation.

Two sources, both read from the running interpreter (no download):

* ``pydoc_data.topics.topics``: the language reference topics ``help()`` shows (79 topics,
  about 465 KB of English technical prose with code), and
* the docstrings of a fixed list of standard-library modules (:data:`STDLIB_MODULES`), their
  public classes, functions and methods, collected with :mod:`inspect`.

Documents are split into train/validation by a hash of their name, so the split does not depend
on the order documents are read in nor on a random seed. Text is tokenised to bytes (vocabulary
256: tiny models stay dominated by their non-embedding parameters, which is what scaling laws
count) or with the SmolLM2 tokenizer (vocabulary 49,152), and the token ids are cached on disk
under :func:`course_utils.runtime.cache_dir`. :func:`sample_batch` draws ``(input, target)``
blocks for next-token training: ``target`` is ``input`` shifted left by one token.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from course_utils import checks
from course_utils.runtime import cache_dir

#: Standard-library modules whose docstrings join the corpus. Pure-Python modules without import
#: side effects (no ``this``, ``antigravity``, ``tkinter``, ``idlelib``, ``turtle``); sorted.
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmd", "codecs",
    "collections", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "dis", "email", "email.message", "enum", "filecmp", "fnmatch",
    "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html", "html.parser", "http", "http.client", "http.cookies", "http.server", "imaplib",
    "importlib", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging",
    "logging.handlers", "lzma", "mailbox", "math", "mimetypes", "multiprocessing", "numbers",
    "operator", "optparse", "os", "pathlib", "pdb", "pickle", "pkgutil", "platform", "plistlib",
    "poplib", "pprint", "profile", "pstats", "queue", "quopri", "random", "re", "reprlib", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver",
    "sqlite3", "ssl", "stat", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "time", "timeit", "tokenize", "trace", "traceback", "types", "typing",
    "unittest", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "wave",
    "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zoneinfo",
)
TOKENIZERS = ("bytes", "smollm2")
BYTE_VOCAB_SIZE = 256
#: Byte 0 never occurs in the documentation; it separates documents in the byte stream.
BYTE_SEPARATOR = 0
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Document:
    """One document of the corpus: ``name`` (``"topic:..."`` or ``"doc:module.qualname"``) and its text."""

    name: str
    text: str


@dataclass
class TokenizedCorpus:
    """Token ids of the train and validation splits (1-D ``torch.long`` tensors, documents joined
    with a separator token) and the tokenizer's vocabulary size."""

    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int
    tokenizer: str
    n_train_docs: int
    n_val_docs: int

    def __repr__(self) -> str:
        return (f"TokenizedCorpus(tokenizer={self.tokenizer!r}, vocab_size={self.vocab_size}, "
                f"train={self.train.numel():,} tokens / {self.n_train_docs} docs, "
                f"val={self.val.numel():,} tokens / {self.n_val_docs} docs)")


def pydoc_topics() -> list[Document]:
    """The language-reference topics of ``pydoc_data.topics`` (what ``help('if')`` shows), by name."""
    from pydoc_data.topics import topics

    return [Document(f"topic:{name}", text.strip()) for name, text in sorted(topics.items()) if text.strip()]


def _public_members(module) -> list[tuple[str, object]]:
    """``(qualname, object)`` for the module's public classes and functions defined in it, and the
    methods of those classes, in sorted order."""
    out = []
    for name, obj in inspect.getmembers(module):  # sorted by name
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # re-exported from elsewhere: counted where it is defined
        out.append((name, obj))
        if inspect.isclass(obj):
            for meth_name, meth in sorted(vars(obj).items()):
                if meth_name.startswith("_") or not callable(meth):
                    continue
                out.append((f"{name}.{meth_name}", meth))
    return out


def stdlib_docstrings(modules: tuple[str, ...] | list[str] = STDLIB_MODULES, *, min_chars: int = 40) -> list[Document]:
    """Docstrings of ``modules`` and of their public classes, functions and methods.

    Each docstring is one document named ``doc:<module>.<qualname>``; docstrings shorter than
    ``min_chars`` and exact duplicates (inherited text) are skipped. Modules that fail to import
    on this platform are skipped.
    """
    checks.instance("modules", modules, (list, tuple))
    seen: set[str] = set()
    docs: list[Document] = []
    for mod_name in modules:
        try:
            module = importlib.import_module(mod_name)
        except ImportError:  # e.g. a module missing from a minimal Python build
            continue
        for qualname, obj in [("", module), *_public_members(module)]:
            try:
                text = inspect.getdoc(obj)
            except Exception:  # a broken __doc__ property
                continue
            if not text or len(text) < min_chars or text in seen:
                continue
            seen.add(text)
            docs.append(Document(f"doc:{mod_name}{'.' + qualname if qualname else ''}", text))
    return docs


def load_documents(modules: tuple[str, ...] | list[str] = STDLIB_MODULES) -> list[Document]:
    """The whole corpus: :func:`pydoc_topics` then :func:`stdlib_docstrings` (deterministic order)."""
    return pydoc_topics() + stdlib_docstrings(modules)


def is_validation(name: str, val_fraction: float) -> bool:
    """Whether the document called ``name`` belongs to the validation split: the first 8 bytes of
    its SHA-256, as a number in [0, 1), fall below ``val_fraction``."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64
    return h < val_fraction


def split_documents(docs: list[Document], val_fraction: float = 0.1) -> tuple[list[Document], list[Document]]:
    """Deterministic ``(train, val)`` split by a hash of each document's name (see :func:`is_validation`)."""
    checks.number("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True)
    train = [d for d in docs if not is_validation(d.name, val_fraction)]
    val = [d for d in docs if is_validation(d.name, val_fraction)]
    if not train or not val:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split for {len(docs)} documents")
    return train, val


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import offline_model_dir

    return AutoTokenizer.from_pretrained(offline_model_dir("smollm2-135m-instruct"))


def encode_documents(docs: list[Document], tokenizer: str = "bytes") -> torch.Tensor:
    """Token ids of ``docs`` joined into one stream, each document followed by a separator
    (byte 0 for ``"bytes"``, the EOS token for ``"smollm2"``)."""
    checks.one_of("tokenizer", tokenizer, TOKENIZERS)
    if tokenizer == "bytes":
        sep = bytes([BYTE_SEPARATOR])
        data = b"".join(d.text.encode("utf-8") + sep for d in docs)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    tok = _smollm2_tokenizer()
    ids: list[int] = []
    for encoded in tok([d.text for d in docs], add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(tok.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def _vocab_size(tokenizer: str) -> int:
    return BYTE_VOCAB_SIZE if tokenizer == "bytes" else len(_smollm2_tokenizer())


def load_corpus(tokenizer: str = "bytes", *, val_fraction: float = 0.1, cache: bool = True) -> TokenizedCorpus:
    """Load the tokenised corpus, building and caching it on first use.

    The cache file (``<cache_dir>/text_corpus/<tokenizer>-py<version>-<key>.pt``) is keyed by the
    Python version (docstrings differ between versions), the tokenizer, the split and the module
    list; it is written to a temporary name and renamed, so concurrent first uses are safe.
    """
    checks.one_of("tokenizer", tokenizer, TOKENIZERS)
    checks.number("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True)
    key = hashlib.sha256(repr((_CACHE_VERSION, tokenizer, val_fraction, STDLIB_MODULES, sys.version)).encode())
    path = cache_dir() / "text_corpus" / f"{tokenizer}-py{sys.version_info[0]}{sys.version_info[1]}-{key.hexdigest()[:12]}.pt"
    if cache and path.exists():
        data = torch.load(path, weights_only=True)
        return TokenizedCorpus(data["train"], data["val"], int(data["vocab_size"]), tokenizer,
                               int(data["n_train_docs"]), int(data["n_val_docs"]))
    train_docs, val_docs = split_documents(load_documents(), val_fraction)
    corpus = TokenizedCorpus(encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer),
                             _vocab_size(tokenizer), tokenizer, len(train_docs), len(val_docs))
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp-{os.getpid()}")
        torch.save({"train": corpus.train, "val": corpus.val, "vocab_size": corpus.vocab_size,
                    "n_train_docs": corpus.n_train_docs, "n_val_docs": corpus.n_val_docs}, tmp)
        os.replace(tmp, path)
    return corpus


def _check_blocks(ids: torch.Tensor, batch_size: int, seq_len: int) -> None:
    checks.tensor("ids", ids, ndim=1, integer=True, shape="(tokens,)")
    checks.positive_int(batch_size=batch_size, seq_len=seq_len)
    if ids.numel() < seq_len + 1:
        raise ValueError(f"seq_len={seq_len} needs at least {seq_len + 1} tokens, the stream has {ids.numel()}")


def sample_batch(ids: torch.Tensor, batch_size: int, seq_len: int, *, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``(input, target)`` blocks of shape ``(batch_size, seq_len)`` from a token stream.

    Starts are uniform over ``[0, len(ids) - seq_len - 1]``; ``target[:, t] = ids[start + t + 1]``,
    the next token after ``input[:, t]``.
    """
    _check_blocks(ids, batch_size, seq_len)
    starts = torch.randint(0, ids.numel() - seq_len, (batch_size,), generator=generator)
    offsets = starts[:, None] + torch.arange(seq_len + 1)
    blocks = ids[offsets]
    return blocks[:, :-1].to(device), blocks[:, 1:].to(device)


def eval_batches(ids: torch.Tensor, batch_size: int, seq_len: int, *, max_batches: int | None = None,
                 device: str | torch.device = "cpu"):
    """Deterministic, non-overlapping ``(input, target)`` blocks covering the stream from its start
    (for a validation loss); at most ``max_batches`` batches."""
    _check_blocks(ids, batch_size, seq_len)
    n_blocks = (ids.numel() - 1) // seq_len
    if max_batches is not None:
        n_blocks = min(n_blocks, max_batches * batch_size)
    for first in range(0, n_blocks, batch_size):
        rows = torch.arange(first, min(first + batch_size, n_blocks))
        offsets = rows[:, None] * seq_len + torch.arange(seq_len + 1)
        blocks = ids[offsets]
        yield blocks[:, :-1].to(device), blocks[:, 1:].to(device)
