"""FAISS vector indexes over unit vectors, with save/load.

* ``"flat"`` — ``faiss.IndexFlatIP``: exact maximum inner product (= cosine on unit vectors),
  ``O(n·d)`` per query.
* ``"hnsw"`` — ``faiss.IndexHNSWFlat`` with inner-product metric: a Hierarchical Navigable
  Small World graph, ``M`` neighbours per node; ``ef_construction`` candidates kept while
  building and ``ef_search`` while searching trade speed for recall. Roughly ``O(log n)``.

Quality of an approximate index is its recall@k against the exact one:
``recall@k = |approx_top_k ∩ exact_top_k| / k`` averaged over queries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from course_utils import checks

INDEX_KINDS = ("flat", "hnsw")


def build_hnsw_index(vectors: np.ndarray, m: int = 32, ef_construction: int = 200, ef_search: int = 64):
    """A ``faiss.IndexHNSWFlat`` over the rows of ``vectors`` ``(n, d)``, searched by inner product:
    ``m`` links per node, ``ef_construction`` candidates kept while adding (set before adding),
    ``ef_search`` while searching."""
    import faiss

    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, d), got shape {vectors.shape}")
    checks.positive_int(m=m, ef_construction=ef_construction, ef_search=ef_search)
    index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(vectors)
    index.hnsw.efSearch = ef_search
    return index


class VectorIndex:
    """A FAISS index of unit vectors searched by inner product."""

    def __init__(self, dim: int, kind: str = "flat", *, hnsw_m: int = 32, ef_construction: int = 200,
                 ef_search: int = 128):
        import faiss

        checks.one_of("kind", kind, INDEX_KINDS)
        checks.positive_int(dim=dim)
        self.dim, self.kind = dim, kind
        self.params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.index = build_hnsw_index(np.zeros((0, dim), dtype=np.float32), hnsw_m, ef_construction, ef_search)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def _check(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {x.shape}")
        return x

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(self._check(vectors, "vectors"))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` → ``(scores, ids)``, each ``(n_queries, min(k, len(self)))``, best first."""
        q = self._check(queries, "queries")
        checks.positive_int(k=k)
        k = min(k, len(self))
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.params["ef_search"], k)
        scores, ids = self.index.search(q, k)
        return scores, ids

    def save(self, path: str | os.PathLike) -> None:
        """Write ``index.faiss`` and ``index.json`` into the folder ``path``."""
        import faiss

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(p / "index.faiss"))
        (p / "index.json").write_text(json.dumps({"dim": self.dim, "kind": self.kind, **self.params}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> VectorIndex:
        import faiss

        p = Path(path)
        if not (p / "index.faiss").exists():
            raise FileNotFoundError(f"no index.faiss in {p}")
        meta = json.loads((p / "index.json").read_text())
        obj = cls.__new__(cls)
        obj.dim, obj.kind = meta.pop("dim"), meta.pop("kind")
        obj.params = meta
        obj.index = faiss.read_index(str(p / "index.faiss"))
        return obj


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of ``|approx[:k] ∩ exact[:k]| / |exact[:k]|``."""
    a, e = np.asarray(approx_ids)[:, :k], np.asarray(exact_ids)[:, :k]
    if a.shape[0] != e.shape[0]:
        raise ValueError(f"approx_ids and exact_ids need the same number of queries, got {a.shape[0]} and {e.shape[0]}")
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / max(len(y), 1) for x, y in zip(a, e)]))
