"""Build student submissions for grading tests from a lab's solution and release."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

_STUB = re.compile(r"^([ \t]*)raise NotImplementedError\(\)", re.MULTILINE)


def read(path: Path):
    return nbformat.read(path, as_version=4)


def copy(nb):
    return nbformat.reads(nbformat.writes(nb), as_version=4)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solution_cells(nb):
    return [c for c in nb.cells if nbgrader_meta(c).get("solution")]


def grade_cells(nb):
    return [c for c in nb.cells if nbgrader_meta(c).get("grade") and not nbgrader_meta(c).get("solution")]


def save(submissions: Path, student: str, lab: str, nb, name: str | None = None) -> None:
    folder = submissions / student / lab
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name or lab}.ipynb")


def first_solution_replaced(solution, release, body: str):
    """The solution with its first solution cell replaced by the released stub, whose
    ``raise NotImplementedError()`` becomes ``body`` (indented to match)."""
    nb = copy(solution)
    stub = solution_cells(release)[0].source
    first = solution_cells(nb)[0]
    first.source = _STUB.sub(lambda m: "\n".join(m.group(1) + line for line in body.splitlines()), stub)
    return nb


def hidden_lines(solution) -> list[str]:
    """Non-trivial source lines inside hidden-test regions."""
    out = []
    for cell in grade_cells(solution):
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) > 12 and not line.strip().startswith("#"):
                out.append(line.strip())
    return out
