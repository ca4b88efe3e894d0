"""course_utils.tooling.headers: the Colab badge and setup cell come from pyproject.toml's URL."""

from __future__ import annotations

import shutil

import nbformat

from course_utils.tooling.headers import colab_url, header_problems, repository_url, setup_source, sync_header
from tests.conftest import ROOT


def _course(tmp_path, url):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\n[project.urls]\nRepository = "{url}"\n')
    shutil.copy(ROOT / "notebooks" / "01_scaling_laws.ipynb", tmp_path / "notebooks")
    return tmp_path / "notebooks" / "01_scaling_laws.ipynb"


def test_the_course_url_and_its_derived_text():
    url = repository_url(ROOT)
    assert url.startswith("https://github.com/")
    assert colab_url("notebooks/00_x.ipynb", ROOT) == (
        f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/main/notebooks/00_x.ipynb")
    assert f"git clone -q --depth 1 {url} /content/" in setup_source(ROOT)


def test_a_moved_repository_is_caught_and_rewritten(tmp_path):
    path = _course(tmp_path, "https://github.com/someone-else/llm-course")
    problems = header_problems(path, tmp_path)
    assert any("Colab badge" in p for p in problems) and any("setup cell" in p for p in problems)
    assert sync_header(path, tmp_path) and header_problems(path, tmp_path) == []
    nb = nbformat.read(path, as_version=4)
    assert "github/someone-else/llm-course/blob/main/notebooks/01_scaling_laws.ipynb" in nb.cells[0].source
    assert "git clone -q --depth 1 https://github.com/someone-else/llm-course /content/llm-course" in nb.cells[2].source
    assert not sync_header(path, tmp_path)  # already in sync
