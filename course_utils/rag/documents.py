"""Documents and loaders: the text a RAG pipeline retrieves from.

A :class:`Document` is an id, a text and a metadata dict. Every chunk cut from a document
keeps that metadata, so a retrieved hit can always name its source (``hit.metadata["topic"]``
for the pydoc corpus, ``hit.metadata["source"]`` for files).

Corpora:

* :func:`load_pydoc_corpus` — Python's reference documentation as shipped with every CPython
  (``pydoc_data.topics``): one document per topic, ``metadata["topic"]`` is the topic key.
* :func:`load_markdown_folder` — every ``*.md`` file under a folder.
* :func:`load_notebook_markdown` — the markdown cells of ``*.ipynb`` files (the course's own
  notebooks are a second corpus).
* :func:`load_pdf` — the text of each page of a PDF, through ``pypdf``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils import checks


@dataclass
class Document:
    """One source text. ``id`` must be unique within a corpus."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.string("Document.id", self.id, non_empty=True)
        checks.string("Document.text", self.text)
        checks.instance("Document.metadata", self.metadata, dict)


def check_documents(docs: Any, name: str = "docs") -> list[Document]:
    """Validate a corpus: a non-empty sequence of :class:`Document` with unique ids."""
    if isinstance(docs, (str, bytes)) or not hasattr(docs, "__iter__"):
        raise TypeError(f"{name} must be a list of Document, got {type(docs).__name__}")
    docs = list(docs)
    checks.non_empty(name, docs)
    for i, d in enumerate(docs):
        checks.instance(f"{name}[{i}]", d, Document)
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{name} has duplicate document ids: {dup}")
    if all(not d.text.strip() for d in docs):
        raise ValueError(f"{name} holds only empty texts: nothing to index")
    return docs


def load_pydoc_corpus(topics: list[str] | None = None) -> list[Document]:
    """Python's reference documentation, one :class:`Document` per ``pydoc_data`` topic.

    Args:
        topics: keep only these topic keys (all 79 when None).
    """
    from pydoc_data.topics import topics as all_topics

    keys = sorted(all_topics) if topics is None else list(topics)
    unknown = [k for k in keys if k not in all_topics]
    if unknown:
        raise ValueError(f"topics: unknown pydoc topic keys {unknown}; see sorted(pydoc_data.topics.topics)")
    return [Document(id=f"pydoc:{k}", text=all_topics[k], metadata={"topic": k, "source": f"pydoc:{k}"})
            for k in keys]


def _folder(path: str | os.PathLike, name: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"{name}={str(path)!r} is not a folder")
    return p


def load_markdown_folder(path: str | os.PathLike, pattern: str = "**/*.md") -> list[Document]:
    """Every markdown file under ``path`` (recursively) as one :class:`Document`;
    ``metadata["source"]`` is the path relative to the folder."""
    root = _folder(path, "path")
    docs = []
    for f in sorted(root.glob(pattern)):
        if f.is_file():
            rel = f.relative_to(root).as_posix()
            docs.append(Document(id=f"md:{rel}", text=f.read_text(encoding="utf-8"),
                                 metadata={"source": rel, "title": f.stem}))
    return docs


def load_notebook_markdown(path: str | os.PathLike, pattern: str = "**/*.ipynb") -> list[Document]:
    """The markdown cells of Jupyter notebooks: one :class:`Document` per notebook (cells
    joined by blank lines), for a file or every notebook under a folder."""
    p = Path(path)
    if p.is_file():
        files, root = [p], p.parent
    else:
        root = _folder(path, "path")
        files = sorted(f for f in root.glob(pattern) if ".ipynb_checkpoints" not in f.parts)
    docs = []
    for f in files:
        nb = json.loads(f.read_text(encoding="utf-8"))
        cells = []
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "markdown":
                src = cell.get("source", "")
                cells.append("".join(src) if isinstance(src, list) else src)
        text = "\n\n".join(c for c in cells if c.strip())
        if text:
            rel = f.relative_to(root).as_posix()
            docs.append(Document(id=f"nb:{rel}", text=text, metadata={"source": rel, "title": f.stem}))
    return docs


def load_pdf(path: str | os.PathLike) -> list[Document]:
    """One :class:`Document` per non-empty page of a PDF (text extracted by ``pypdf``);
    ``metadata`` has ``source`` (the file name) and ``page`` (1-based)."""
    from pypdf import PdfReader

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path={str(path)!r} is not a file")
    reader = PdfReader(str(p))
    docs = []
    for i, page in enumerate(reader.pages, start=1):
        text = (page.extract_text() or "").strip()
        if text:
            docs.append(Document(id=f"pdf:{p.name}:{i}", text=text, metadata={"source": p.name, "page": i}))
    return docs
