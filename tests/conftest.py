"""Shared fixtures: the course root, one execution per notebook per session, GPU skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_COURSE_ROOT", str(ROOT))
os.environ.setdefault("LLM_COURSE_SMOKE", "1")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """``executed(path)`` runs a notebook once per session in SMOKE mode (papermill) and
    returns its :class:`course_utils.tooling.runner.NotebookResult`; later calls reuse the result."""
    from course_utils.tooling.runner import execute_notebook

    out_dir = tmp_path_factory.mktemp("executed")
    cache: dict[Path, object] = {}

    def run(path: Path):
        path = Path(path).resolve()
        if path not in cache:
            name = f"{path.parent.name}__{path.name}"
            cache[path] = execute_notebook(path, out_dir / name, smoke=True, device="cpu")
        return cache[path]

    return run
