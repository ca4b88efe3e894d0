"""For every lab: the solution passes every test cell, the released lab fails them, the
release is in sync with the solution and leaks nothing, and the reference solution
autogrades to full marks through `llm-course grade`."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.tooling.grading import failed_grade_cells, release
from tests.conftest import ROOT
from tests.labs.helpers import grade_cells, read, save

LABS = sorted(p.name for p in (ROOT / "solutions").glob("lab*") if p.is_dir())


def _notebook(lab: str) -> Path:
    return ROOT / "solutions" / lab / f"{lab}.ipynb"


def test_every_lab_has_a_release():
    assert LABS, "no labs in solutions/"
    assert sorted(p.name for p in (ROOT / "labs").glob("lab*") if p.is_dir()) == LABS


@pytest.mark.parametrize("lab", LABS)
def test_solution_passes_every_test_cell(lab, executed):
    solution = read(_notebook(lab))
    assert len(grade_cells(solution)) >= 2, "a lab needs autograded test cells"
    assert any("BEGIN HIDDEN TESTS" in c.source for c in grade_cells(solution)), "a lab needs hidden tests"
    result = executed(_notebook(lab))
    assert result.status == "ok", result.error
    assert failed_grade_cells(read(Path(result.output))) == {}


@pytest.mark.parametrize("lab", LABS)
def test_release_is_in_sync_and_leaks_nothing(lab, tmp_path):
    release([lab], root=ROOT, out_dir=tmp_path)
    committed = sorted(p.relative_to(ROOT / "labs" / lab) for p in (ROOT / "labs" / lab).rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path / lab) for p in (tmp_path / lab).rglob("*") if p.is_file())
    assert committed == fresh, "labs/ and solutions/ hold different files: run `llm-course release`"
    for rel in fresh:
        assert (ROOT / "labs" / lab / rel).read_bytes() == (tmp_path / lab / rel).read_bytes(), (
            f"labs/{lab}/{rel} is out of date: run `llm-course release {lab}` and commit")
    for nb_path in (ROOT / "labs" / lab).glob("*.ipynb"):
        text = nb_path.read_text()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text


@pytest.mark.parametrize("lab", LABS)
def test_reference_gets_full_marks_and_release_fails(lab, tmp_path):
    subs = tmp_path / "submitted"
    save(subs, "reference", lab, read(_notebook(lab)))
    save(subs, "unchanged_release", lab, read(ROOT / "labs" / lab / f"{lab}.ipynb"))
    out = tmp_path / "grades.csv"
    proc = subprocess.run([sys.executable, "-m", "course_utils", "grade", lab, "--submissions", str(subs),
                           "--out", str(out), "--jobs", "2"],  # both students at once (test_grading_robustness: same grades)
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["student_id"]: r for r in csv.DictReader(out.open())}
    ref, blank = rows["reference"], rows["unchanged_release"]
    assert ref["status"] == "graded" and float(ref["max_score"]) > 0
    assert float(ref["score"]) == float(ref["max_score"]), ref
    # every test cell of the untouched student version fails
    assert float(blank["score"]) == 0.0, blank
    solution = read(_notebook(lab))
    assert blank["reason"].count("(") == len(grade_cells(solution)), blank["reason"]
    assert (tmp_path / "feedback" / "reference" / lab / f"{lab}.html").exists()


@pytest.mark.parametrize("lab", LABS)
def test_hidden_tests_observe_and_never_call_the_reference(lab):
    """Hidden tests only observe through course_utils.tooling.hidden; the lab declares the reference of
    every function the student writes (each importable), and the release does not carry that map."""
    from course_utils.tooling.grading.reference import lab_blocked, lab_references

    refs = lab_references(ROOT / "solutions" / lab)
    assert refs, f"{lab} declares no llm_course.reference in its metadata"
    blocked = lab_blocked(ROOT / "solutions" / lab)
    solution = read(_notebook(lab))
    for cell in grade_cells(solution):
        if "BEGIN HIDDEN TESTS" not in cell.source:
            continue
        region = cell.source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]
        assert "hidden.check" in region, f"{cell.metadata['nbgrader']['grade_id']}: hidden tests must observe"
        for dotted in blocked:
            module, _, name = dotted.rpartition(".")
            assert f"{module} import" not in region and f"{module}.{name}" not in region, (
                f"{cell.metadata['nbgrader']['grade_id']} calls the blocked reference {dotted}")
    released = read(ROOT / "labs" / lab / f"{lab}.ipynb")
    assert "llm_course" not in released.metadata
