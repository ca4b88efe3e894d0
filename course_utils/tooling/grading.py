"""Release and autograde the course's labs with nbgrader, robust to what students hand in.

Course layout for nbgrader (``nbgrader_config.py``): ``solutions/<lab>/`` is the *source*
(instructor version) and ``labs/<lab>/`` the generated *release* (student version).

:func:`grade_submissions` grades a folder in nbgrader's ``submitted/`` layout
(``DIR/<student_id>/<lab>/<notebook>.ipynb``) in a fresh, private nbgrader course folder:

* each student is autograded in a separate ``nbgrader autograde`` process, so nothing one
  student does can stop the others being graded;
* every cell has a time limit (``cell_timeout``); a cell that runs past it is interrupted,
  counts as failed, and the rest of the notebook still runs — a looping solution is scored
  on what passed. A whole student has a wall-clock limit too (``student_timeout``);
* a kernel that dies (``os._exit``, a segfault) or a notebook that is missing or not valid
  JSON scores 0 with the reason in the CSV's ``reason`` column;
* locked cells a student edited are restored from the gradebook and deleted test cells are
  added back (``OverwriteCells.add_missing_cells``); outputs are capped (``LimitOutput``);
* per-student feedback HTML shows the tests' scores but neither the source of hidden tests
  nor any output of a cell that holds them (a traceback would quote hidden lines);
* the CSV (``student_id,lab,score,max_score,status,reason``) is sorted by student and holds
  no times or paths, so grading twice gives the same file.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
CSV_COLUMNS = ["student_id", "lab", "score", "max_score", "status", "reason"]

_CONFIG_TEMPLATE = """\
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.db_url = "sqlite:///" + {db!r}
c.CourseDirectory.course_id = "llm-engineering"
c.Execute.timeout = {cell_timeout}
c.Execute.interrupt_on_timeout = True
c.Execute.execute_retries = 0
# A loaded machine must not abort a whole notebook: wait longer for the kernel to start and
# for its last outputs instead of raising (nbgrader's defaults are 60 s and 4 s, raising).
c.Execute.startup_timeout = 300
c.Execute.iopub_timeout = 30
c.Execute.raise_on_iopub_timeout = False
c.OverwriteCells.add_missing_cells = True
c.LimitOutput.max_lines = {max_lines}
c.LimitOutput.max_traceback = 100
c.Autograde.create_student = True
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import GetGrades
from course_utils.tooling.grading import HideHiddenTests
c.GenerateFeedback.preprocessors = [HideHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]
"""


def _hide_hidden_tests(cell) -> bool:
    """Remove hidden-test regions from a cell and withhold its outputs; True if it had any."""
    if cell.cell_type != "code" or HIDDEN_BEGIN not in cell.source:
        return False
    kept, hidden = [], False
    for line in cell.source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
            kept.append(line[: line.index(HIDDEN_BEGIN)] + "# (hidden tests are not shown)")
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    cell.source = "\n".join(kept)
    failed = [o.get("ename", "error") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    text = ("This cell holds hidden tests, so its output is withheld. "
            + (f"A test in it failed ({failed[0]})." if failed else "Its tests passed."))
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
    return True


def _make_hide_preprocessor():
    from nbgrader.preprocessors import NbGraderPreprocessor

    class HideHiddenTests(NbGraderPreprocessor):
        """Feedback preprocessor: strip hidden tests from sources and withhold their outputs."""

        def preprocess_cell(self, cell, resources, index):
            _hide_hidden_tests(cell)
            return cell, resources

    return HideHiddenTests


HideHiddenTests = _make_hide_preprocessor()


@dataclass
class GradeRow:
    student_id: str
    lab: str
    score: float
    max_score: float
    status: str  # "graded" or "error"
    reason: str = ""


def _run_nbgrader(args: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> tuple[int, str]:
    """Run ``python -m nbgrader ARGS`` in its own process group; kill the group on timeout."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        return -9, out + f"\n[timed out after {timeout:.0f} s]"


def _nbgrader_env(smoke: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["LLM_COURSE_SMOKE"] = "1" if smoke else "0"
    env.pop("LLM_COURSE_METRICS_FILE", None)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def repo_paths(root: Path | None = None) -> Path:
    from course_utils.runtime import repo_root

    return Path(root) if root else repo_root()


def lab_notebooks(lab: str, root: Path | None = None) -> list[str]:
    """Names (without .ipynb) of the notebooks of a lab's solution folder."""
    src = repo_paths(root) / "solutions" / lab
    if not src.is_dir():
        known = sorted(p.name for p in (repo_paths(root) / "solutions").glob("lab*"))
        raise ValueError(f"unknown lab {lab!r}: no folder {src}; labs: {known}")
    return sorted(p.stem for p in src.glob("*.ipynb"))


def _prepare_course(lab: str, work: Path, root: Path, cell_timeout: int, env: dict[str, str]) -> Path:
    """A private nbgrader course in ``work`` with the lab generated into its gradebook."""
    if work.exists():
        shutil.rmtree(work)
    (work / "source").mkdir(parents=True)
    shutil.copytree(root / "solutions" / lab, work / "source" / lab,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    (work / "nbgrader_config.py").write_text(_CONFIG_TEMPLATE.format(
        root=str(work), db=str(work / "gradebook.db"), cell_timeout=int(cell_timeout), max_lines=1000))
    code, out = _run_nbgrader(["generate_assignment", lab, "--force"], work, 600, env)
    if code != 0:
        raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{out[-3000:]}")
    return work


def _check_submission(folder: Path, notebooks: list[str]) -> str | None:
    """Why a student's folder cannot be graded, or None if it can."""
    for name in notebooks:
        path = folder / f"{name}.ipynb"
        if not path.exists():
            return f"missing notebook {name}.ipynb"
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # not JSON, or not a notebook
            return f"{name}.ipynb is not a valid notebook ({type(exc).__name__})"
        if not isinstance(nb.get("cells"), list):
            return f"{name}.ipynb is not a valid notebook (no cells)"
    return None


def _score_from_gradebook(work: Path, lab: str, student: str) -> tuple[float, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gb:
        sub = gb.find_submission(lab, student)
        return float(sub.score), float(sub.max_score)


def _max_score(work: Path, lab: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gb:
        return float(gb.find_assignment(lab).max_score)


def _autograde_failure(log: str, code: int) -> str:
    if code == -9:
        return "grading stopped: the notebook ran past the time limit for a whole submission"
    lowered = log.lower()
    if "kernel died" in lowered or "deadkernel" in lowered:
        return "the notebook's kernel died while running (e.g. os._exit or a crash), so it could not be graded"
    return "nbgrader could not autograde this submission (see the instructor log)"


def grade_submissions(lab: str, submissions: str | os.PathLike, out_csv: str | os.PathLike | None = None, *,
                      root: Path | None = None, work_dir: Path | None = None, feedback_dir: Path | None = None,
                      cell_timeout: int = 60, student_timeout: int = 900, smoke: bool = True,
                      progress: bool = True) -> list[GradeRow]:
    """Autograde every student in ``submissions`` (nbgrader ``submitted/`` layout) for ``lab``.

    Returns one :class:`GradeRow` per student folder (sorted by student id), writes them to
    ``out_csv`` when given, and writes feedback HTML to ``feedback_dir/<student>/<lab>/``
    (default: ``feedback/`` beside the CSV). ``work_dir`` keeps nbgrader's course folder and
    logs (default: a temporary folder, removed afterwards).
    """
    from tqdm.auto import tqdm

    root = repo_paths(root)
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise ValueError(f"submissions={str(submissions)!r} is not a folder (expected DIR/<student_id>/{lab}/...)")
    if cell_timeout <= 0 or student_timeout <= 0:
        raise ValueError("cell_timeout and student_timeout must be positive numbers of seconds")
    notebooks = lab_notebooks(lab, root)
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    env = _nbgrader_env(smoke)
    tmp = None
    if work_dir is None:
        tmp = tempfile.mkdtemp(prefix=f"grade-{lab}-")
        work_dir = Path(tmp)
    work = Path(work_dir)
    if feedback_dir is None and out_csv is not None:
        feedback_dir = Path(out_csv).resolve().parent / "feedback"
    rows: list[GradeRow] = []
    try:
        _prepare_course(lab, work, root, cell_timeout, env)
        max_score = _max_score(work, lab)
        for student in tqdm(students, desc=f"grading {lab}", unit="student", disable=not progress):
            rows.append(_grade_one(lab, student, submissions, work, notebooks, max_score, env,
                                   student_timeout))
        graded = [r.student_id for r in rows if r.status == "graded"]
        if feedback_dir is not None and graded:
            _write_feedback(lab, work, feedback_dir, graded, env)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if out_csv is not None:
        write_csv(rows, out_csv)
    return rows


def _grade_one(lab: str, student: str, submissions: Path, work: Path, notebooks: list[str], max_score: float,
               env: dict[str, str], student_timeout: int) -> GradeRow:
    folder = submissions / student / lab
    if not folder.is_dir():
        return GradeRow(student, lab, 0.0, max_score, "error", f"no {lab}/ folder in the submission")
    problem = _check_submission(folder, notebooks)
    if problem:
        return GradeRow(student, lab, 0.0, max_score, "error", problem)
    dest = work / "submitted" / student / lab
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    code, log = _run_nbgrader(["autograde", lab, "--student", student, "--force"], work, student_timeout, env)
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / f"{student}.log").write_text(log)
    autograded = work / "autograded" / student / lab
    if code != 0 or not all((autograded / f"{n}.ipynb").exists() for n in notebooks):
        return GradeRow(student, lab, 0.0, max_score, "error", _autograde_failure(log, code))
    score, max_score = _score_from_gradebook(work, lab, student)
    return GradeRow(student, lab, round(score, 4), round(max_score, 4), "graded",
                    _failed_tests_reason(autograded, notebooks))


def _failed_tests_reason(autograded: Path, notebooks: list[str]) -> str:
    """'failed: test_a (AssertionError); test_b (CellTimeoutError)' for an autograded lab."""
    failed = []
    for name in notebooks:
        nb = nbformat.read(autograded / f"{name}.ipynb", as_version=4)
        for grade_id, ename in failed_grade_cells(nb).items():
            if ename == "KeyboardInterrupt":
                ename = "timed out"
            failed.append(f"{grade_id} ({ename})")
    return ("failed: " + "; ".join(failed)) if failed else ""


def _write_feedback(lab: str, work: Path, feedback_dir: Path, students: list[str], env: dict[str, str]) -> None:
    """nbgrader feedback HTML for the graded students, hidden tests withheld, copied out."""
    code, log = _run_nbgrader(["generate_feedback", lab, "--force"], work, 1800, env)
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / "feedback.log").write_text(log)
    for student in students:
        src = work / "feedback" / student / lab
        if src.is_dir():
            target = Path(feedback_dir) / student / lab
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src, target)


def write_csv(rows: list[GradeRow], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in sorted(rows, key=lambda r: r.student_id):
            writer.writerow([r.student_id, r.lab, f"{r.score:g}", f"{r.max_score:g}", r.status, r.reason])
    return path


def grade_reference_solution(lab: str, *, root: Path | None = None, work_dir: Path | None = None,
                             smoke: bool = True) -> dict:
    """Autograde the instructor's own solution as a student called ``reference``."""
    root = repo_paths(root)
    with tempfile.TemporaryDirectory(prefix=f"ref-{lab}-") as tmp:
        subs = Path(tmp) / "submitted"
        shutil.copytree(root / "solutions" / lab, subs / "reference" / lab)
        rows = grade_submissions(lab, subs, root=root, work_dir=work_dir, smoke=smoke, progress=False)
    row = rows[0]
    return {"lab": lab, "score": row.score, "max_score": row.max_score, "status": row.status,
            "reason": row.reason, "full_marks": row.status == "graded" and row.score == row.max_score > 0}


def release(labs: list[str] | None = None, *, root: Path | None = None, out_dir: Path | None = None) -> list[Path]:
    """Generate the student version of each lab (``labs/<lab>/``) from ``solutions/<lab>/``.

    Runs ``nbgrader generate_assignment`` in a private course folder (a fresh gradebook, so
    no earlier submission interferes) and copies the release into ``out_dir`` (default
    ``labs/``). Returns the written folders.
    """
    root = repo_paths(root)
    labs = labs or sorted(p.name for p in (root / "solutions").glob("lab*") if p.is_dir())
    out_dir = Path(out_dir) if out_dir else root / "labs"
    env = _nbgrader_env(True)
    written = []
    for lab in labs:
        lab_notebooks(lab, root)  # validates the name
        with tempfile.TemporaryDirectory(prefix=f"release-{lab}-") as tmp:
            work = _prepare_course(lab, Path(tmp), root, 60, env)
            target = out_dir / lab
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(work / "release" / lab, target)
            for nb_path in target.glob("*.ipynb"):  # normalise so that a release is reproducible
                nb = nbformat.read(nb_path, as_version=4)
                nbformat.write(nb, nb_path)
        written.append(target)
    return written


def failed_grade_cells(executed_nb) -> dict[str, str]:
    """grade_id → error name for the test cells that raised in an executed notebook."""
    failed = {}
    for cell in executed_nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            errors = [o.get("ename", "error") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if errors:
                failed[meta["grade_id"]] = errors[0]
    return failed
