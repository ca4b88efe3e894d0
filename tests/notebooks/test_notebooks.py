"""Every chapter notebook and lab solution executes headlessly in SMOKE mode (one process)."""

from __future__ import annotations

import json

import nbformat
import pytest

from course_utils.tooling.runner import course_notebooks
from tests.conftest import ROOT

NOTEBOOKS = course_notebooks(ROOT)
ALL_SOURCES = NOTEBOOKS + sorted((ROOT / "labs").glob("lab*/*.ipynb"))


def _id(p):
    return f"{p.parent.name}/{p.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_executes(path, executed):
    result = executed(path)
    assert result.status == "ok", f"{path.name} failed:\n{result.error}"


@pytest.mark.parametrize("path", ALL_SOURCES, ids=_id)
def test_notebook_is_committed_clean(path):
    """Committed without outputs, python3 kernel, a parameters cell first among code cells."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs committed"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    params = code[0].source
    for knob in ("SMOKE", "DEVICE"):
        assert knob in params, f"parameters cell lacks {knob}"
    assert "colab.research.google.com" in json.dumps(nb.cells[0].source), "first cell needs a Colab link"


def test_there_are_notebooks_and_labs():
    assert any(p.parent.name == "notebooks" for p in NOTEBOOKS)
    assert any(p.parent.parent.name == "solutions" for p in NOTEBOOKS)
