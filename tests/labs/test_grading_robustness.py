"""`llm-course grade` on what real students hand in: a correct, an empty, a looping, a
crashing, a broken and several tampered submissions, graded in bounded time, once one student at a
time and once two at a time, with the same CSV and the same feedback, which never shows hidden tests."""

from __future__ import annotations

import csv
import html
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

from tests.conftest import ROOT
from tests.labs.helpers import copy, first_solution_replaced, grade_cells, hidden_lines, read, save, solution_cells

LAB = "lab00_sampling"
CELL_TIMEOUT = 8


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("robust")
    solution = read(ROOT / "solutions" / LAB / f"{LAB}.ipynb")
    released = read(ROOT / "labs" / LAB / f"{LAB}.ipynb")
    subs = tmp / "submitted"
    save(subs, "a_correct", LAB, solution)
    save(subs, "b_empty", LAB, released)
    save(subs, "c_looping", LAB, first_solution_replaced(solution, released, "while True:\n    pass"))
    save(subs, "c_raising", LAB, first_solution_replaced(solution, released, "raise ValueError('wrong')"))
    crash = copy(solution)
    solution_cells(crash)[0].source += "\nimport os\nos._exit(1)"
    save(subs, "d_crashing", LAB, crash)
    (subs / "e_not_json" / LAB).mkdir(parents=True)
    (subs / "e_not_json" / LAB / f"{LAB}.ipynb").write_text('{"cells": [ oops')
    tampered = copy(released)  # no implementation, and every test replaced by `pass`
    for cell in grade_cells(tampered):
        cell.source = "pass"
    save(subs, "f_tampered_tests_removed", LAB, tampered)
    strict = copy(solution)  # a correct implementation whose tests the student broke
    for cell in grade_cells(strict):
        cell.source = "assert False, 'student edit'"
    save(subs, "g_tampered_tests_broken", LAB, strict)
    deleted = copy(solution)
    deleted.cells = [c for c in deleted.cells if c not in grade_cells(deleted)]
    save(subs, "h_tests_deleted", LAB, deleted)
    noisy = copy(solution)
    solution_cells(noisy)[0].source += "\nfor _i in range(100_000):\n    print('spam', _i)"
    save(subs, "i_huge_output", LAB, noisy)
    (subs / "j_wrong_folder" / "lab99").mkdir(parents=True)

    def grade(out, jobs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "course_utils", "grade", LAB, "--submissions", str(subs),
                               "--out", str(out), "--cell-timeout", str(CELL_TIMEOUT), "--student-timeout", "300",
                               "--jobs", str(jobs)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return time.perf_counter() - start

    first = tmp / "serial" / "grades.csv"
    seconds = grade(first, jobs=1)
    second = tmp / "parallel" / "grades.csv"
    grade(second, jobs=2)
    rows = {r["student_id"]: r for r in csv.DictReader(first.open())}
    return {"rows": rows, "first": first, "second": second, "seconds": seconds, "solution": solution,
            "tmp": tmp}


def score(rows, student):
    return float(rows[student]["score"])


def test_scores(graded):
    rows = graded["rows"]
    full = float(rows["a_correct"]["max_score"])
    assert full > 0 and score(rows, "a_correct") == full
    assert score(rows, "b_empty") == 0
    # a looping solution is stopped and scored on what passed: like the same solution raising
    assert score(rows, "c_looping") == score(rows, "c_raising") < full
    assert "timed out" in rows["c_looping"]["reason"]
    assert rows["d_crashing"]["status"] == "error" and score(rows, "d_crashing") == 0
    assert "kernel died" in rows["d_crashing"]["reason"]
    assert rows["e_not_json"]["status"] == "error" and "not a valid notebook" in rows["e_not_json"]["reason"]
    assert score(rows, "f_tampered_tests_removed") == 0  # locked tests restored, they fail
    assert score(rows, "g_tampered_tests_broken") == full  # locked tests restored, they pass
    assert score(rows, "h_tests_deleted") == full  # deleted tests added back and run
    assert score(rows, "i_huge_output") == full
    assert rows["j_wrong_folder"]["status"] == "error" and LAB in rows["j_wrong_folder"]["reason"]


def test_grading_twice_in_parallel_gives_the_same_csv_and_feedback(graded):
    assert graded["first"].read_bytes() == graded["second"].read_bytes()
    serial = {p.relative_to(graded["first"].parent): p.read_bytes() for p in (graded["first"].parent / "feedback").rglob("*.html")}
    parallel = {p.relative_to(graded["second"].parent): p.read_bytes()
                for p in (graded["second"].parent / "feedback").rglob("*.html")}
    assert serial.keys() == parallel.keys() and len(serial) >= 8
    assert serial == parallel


def test_grading_time_is_bounded(graded):
    # 11 students, one looping in every affected cell: bounded by the per-cell timeout
    assert graded["seconds"] < 900


def test_feedback_never_shows_hidden_tests(graded):
    lines = hidden_lines(graded["solution"])
    assert lines, "lab00 should have hidden tests"
    pages = list((graded["first"].parent / "feedback").rglob("*.html"))
    assert len(pages) >= 8
    for page in pages:
        text = page.read_text()
        assert "BEGIN HIDDEN TESTS" not in text
        for line in lines:
            assert line not in text and html.escape(line) not in text, f"{page} shows hidden line {line!r}"


def test_unsandboxed_grading_still_grades_and_says_so(tmp_path):
    """Where no sandbox is available (a laptop, Colab), grading works, warns, and returns no output."""
    subs = tmp_path / "submitted"
    save(subs, "a_correct", LAB, read(ROOT / "solutions" / LAB / f"{LAB}.ipynb"))
    save(subs, "b_empty", LAB, read(ROOT / "labs" / LAB / f"{LAB}.ipynb"))
    out = tmp_path / "grades.csv"
    proc = subprocess.run([sys.executable, "-m", "course_utils", "grade", LAB, "--submissions", str(subs), "--out",
                           str(out), "--sandbox", "off", "--jobs", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "graded WITHOUT a sandbox" in proc.stdout
    rows = {r["student_id"]: r for r in csv.DictReader(out.open())}
    assert rows["a_correct"]["score"] == rows["a_correct"]["max_score"] == "10" and rows["b_empty"]["score"] == "0"
    assert {r["sandbox"] for r in rows.values()} == {"none"}
    page = (tmp_path / "feedback" / "a_correct" / LAB / f"{LAB}.html").read_text()
    assert "graded without a sandbox, so no output of your notebook is returned" in page
