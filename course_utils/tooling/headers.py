"""The first two cells every notebook and lab shares: the Colab badge and the setup cell.

Both must name the course's repository, and a notebook on Colab has nothing installed yet, so
they carry its URL as text. This module derives that text from one place, the project URL in
``pyproject.toml`` (``[project.urls] Repository``), checks notebooks against it
(:func:`header_problems`, run by the tests for every notebook and lab) and rewrites them when the
URL changes (:func:`sync_header`; ``python scripts/sync_notebook_headers.py``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from course_utils.runtime import repo_root

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
_COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+")
_CLONE = re.compile(r"git clone -q --depth 1 (\S+) /content/(\S+?)\"")
SETUP_TEMPLATE = '''# Setup: works on Colab, on a local GPU, and offline on a CPU laptop.
import importlib.util, subprocess, sys
if importlib.util.find_spec("course_utils") is None:  # a fresh Colab runtime: fetch and install the course
    subprocess.run("git clone -q --depth 1 {url} /content/{name}"
                   " && bash /content/{name}/install.sh", shell=True, check=True)
    sys.path.insert(0, "/content/{name}")
from course_utils.runtime import setup, record_metric
SMOKE, DEVICE = setup(SMOKE, DEVICE, seed=SEED)'''


def repository_url(root: Path | None = None) -> str:
    """The repository URL of ``pyproject.toml``'s ``[project.urls]`` (``Repository``, else ``Homepage``)."""
    with ((root or repo_root()) / "pyproject.toml").open("rb") as fh:
        urls = tomllib.load(fh)["project"].get("urls", {})
    url = urls.get("Repository") or urls.get("Homepage")
    if not url or not url.startswith("https://github.com/"):
        raise ValueError(f"pyproject.toml needs [project.urls] Repository = 'https://github.com/<owner>/<name>', "
                         f"got {url!r}")
    return url.rstrip("/")


def colab_url(relative_path: str | Path, root: Path | None = None) -> str:
    """The Colab link that opens ``relative_path`` (from the course root) from the repository's main branch."""
    slug = repository_url(root).removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/main/{Path(relative_path).as_posix()}"


def colab_target(path: Path, root: Path) -> Path:
    """What a notebook's badge opens: the notebook itself, or for a lab solution the released lab."""
    rel = path.resolve().relative_to(root.resolve())
    if rel.parts[0] == "solutions":
        rel = Path("labs", *rel.parts[1:])
    return rel


def setup_source(root: Path | None = None) -> str:
    """The setup cell, cloning the repository of ``pyproject.toml``."""
    url = repository_url(root)
    return SETUP_TEMPLATE.format(url=url, name=url.rsplit("/", 1)[-1])


def _cells(path: Path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    return nb, nb.cells[0], code[1] if len(code) > 1 else None


def header_problems(path: str | Path, root: Path | None = None) -> list[str]:
    """What in a notebook's Colab badge (first cell) and setup cell (second code cell) disagrees
    with ``pyproject.toml``'s repository URL; [] when they agree."""
    root = root or repo_root()
    path = Path(path)
    _, first, setup = _cells(path)
    want = colab_url(colab_target(path, root), root)
    problems = []
    links = _COLAB_LINK.findall(first.source)
    if COLAB_BADGE_IMAGE not in first.source or want not in links:
        problems.append(f"the first cell's Colab badge must link {want}")
    problems += [f"the first cell links {link}, expected {want}" for link in links if link != want]
    if setup is None or setup.source.strip() != setup_source(root):
        problems.append("the second code cell must be the setup cell of course_utils.tooling.headers.setup_source()")
    return problems


def sync_header(path: str | Path, root: Path | None = None) -> bool:
    """Rewrite the badge link and the setup cell of one notebook from ``pyproject.toml``; True if it changed."""
    import nbformat

    root = root or repo_root()
    path = Path(path)
    nb, first, setup = _cells(path)
    before = (first.source, setup.source if setup is not None else None)
    first.source = _COLAB_LINK.sub(colab_url(colab_target(path, root), root), first.source)
    if setup is not None and _CLONE.search(setup.source):
        setup.source = setup_source(root)
    if (first.source, setup.source if setup is not None else None) == before:
        return False
    nbformat.write(nb, path)
    return True
