"""Sentence embeddings with an on-disk cache.

Embedding is the slow step of building an index (all-MiniLM-L6-v2 embeds a few dozen
250-token chunks per second on 2 CPU cores), and a corpus is rebuilt many times while one tunes
chunking. :class:`CachedEmbedder` therefore stores every vector in a SQLite file under
``course_utils.runtime.cache_dir()/embeddings`` keyed by ``sha256(model name ‖ text)``: a
second build embeds only texts it has never seen.

Vectors are L2-normalised, so the inner product is the cosine similarity:
``cos(u, v) = u·v / (‖u‖‖v‖) = u·v`` for ``‖u‖ = ‖v‖ = 1``.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from course_utils import checks
from course_utils.runtime import cache_dir


class EmbeddingCache:
    """A persistent ``key → float32 vector`` store (SQLite, safe for concurrent readers)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=60)
        self._conn.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")
        self._conn.commit()

    @staticmethod
    def key(model_name: str, text: str) -> str:
        return hashlib.sha256(f"{model_name}\x00{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self._conn.execute(f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(part))})", part)
            for k, blob in rows:
                out[k] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)",
                               [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])
        self._conn.commit()

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0]

    def close(self) -> None:
        self._conn.close()


def _model_path(model) -> str:
    """The folder or hub id a sentence-transformers model was loaded from (its cache identity)."""
    try:
        return str(model[0].auto_model.config._name_or_path)
    except (AttributeError, IndexError, TypeError, KeyError) as err:
        raise ValueError("cannot tell which model this embedder is; pass name=<a unique model name> so that "
                         "cached vectors of different models never mix") from err


def embedding_dim(model) -> int:
    """The width of a sentence-transformers model's embeddings."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def embed_texts(model, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Unit-length embeddings of ``texts`` by a sentence-transformers ``model``: each row is
    ``e / ||e||``, so that the inner product of two rows is their cosine similarity.

    Returns a float32 array ``(len(texts), dim)``; no texts give ``(0, dim)``.
    """
    texts = list(texts)
    if not texts:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=progress)
    return np.asarray(vecs, dtype=np.float32)


class CachedEmbedder:
    """Normalised sentence embeddings through ``course_utils.models.load_embedder``, cached on disk.

    Args:
        model: an embedder name for :func:`course_utils.models.load_embedder` (default the
            offline all-MiniLM-L6-v2), or an already loaded ``SentenceTransformer``.
        cache: True (the default file under ``cache_dir()``), False (no cache), or a path.
        device: where the embedder runs.
        name: the model's name in cache keys (default: the name it was loaded by, or its path).

    ``stats`` counts texts embedded (``computed``) and served from the cache (``cached``).
    """

    def __init__(self, model="all-minilm-l6-v2", *, cache: bool | str | os.PathLike = True, device: str = "auto",
                 batch_size: int = 32, name: str | None = None):
        if isinstance(model, str):
            from course_utils.models import load_embedder

            self.name = model
            self.model = load_embedder(model, device=device)
        elif hasattr(model, "encode"):
            self.model = model
            self.name = name or _model_path(model)
        else:
            raise TypeError(f"model must be an embedder name or a SentenceTransformer, got {type(model).__name__}")
        self.name = name or self.name
        self.batch_size = batch_size
        if cache is True:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)[-80:]
            cache = cache_dir() / "embeddings" / f"{safe}.sqlite"
        self.cache = EmbeddingCache(cache) if cache else None
        self.stats = {"computed": 0, "cached": 0}

    @property
    def dim(self) -> int:
        return embedding_dim(self.model)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        return embed_texts(self.model, texts, self.batch_size, progress)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` → ``(len(texts), dim)`` float32 unit vectors (cache first)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings; wrap a single text as [text]")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must hold strings only")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        keys = [EmbeddingCache.key(self.name, t) for t in texts]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        if todo:
            new = self._encode(todo, progress)
            fresh = {EmbeddingCache.key(self.name, t): v for t, v in zip(todo, new)}
            if self.cache is not None:
                self.cache.put_many(fresh)
            found.update(fresh)
        self.stats["computed"] += len(todo)
        self.stats["cached"] += len(texts) - len(todo)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def encode_query(self, query: str) -> np.ndarray:
        """One query → a ``(dim,)`` unit vector (not cached: queries are rarely repeated)."""
        checks.string("query", query)
        return self._encode([query], False)[0]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)
