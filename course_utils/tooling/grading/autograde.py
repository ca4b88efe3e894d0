"""Grade a class: every student in a sandbox, hidden tests judged outside it, N students at a time.

:func:`grade_submissions` takes nbgrader's ``submitted/`` layout (``DIR/<student_id>/<lab>/<nb>.ipynb``):

1. **Once per lab.** A private nbgrader course (the lab's source and gradebook); a copy of
   ``course_utils`` with the lab's reference answers replaced by stubs that raise; the *reference
   run*: the solution notebook with each function the student writes rebound to its reference,
   executed in a sandboxed kernel, whose hidden-check observations are the expected values.
2. **Per student, ``jobs`` at a time.** ``nbgrader autograde`` in the student's own copy of the
   course folder. Its kernel runs in a sandbox (:mod:`.sandbox`) as its own unprivileged user, with
   the redacted ``course_utils`` and a scratch copy of the student's files only. nbgrader restores
   locked cells, runs the notebook (a per-cell timeout interrupts a looping cell), and our
   ``JudgeHiddenChecks`` step compares the observations with the expected values in the grader's
   process. Then feedback HTML with hidden tests withheld (:mod:`.feedback`), and plagiarism flags
   (:mod:`.plagiarism`).
3. A CSV ``student_id,lab,score,max_score,status,reason,flags,sandbox``, sorted by student, with no
   times or paths: grading twice, or with a different ``jobs``, gives the same file.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_utils.runtime import GRADING_ENV, cache_dir
from course_utils.tooling.grading import plagiarism
from course_utils.tooling.grading.course import (
    course_root,
    failed_grade_cells,
    lab_notebooks,
    prepare_course,
    run_worker,
    tool_env,
)
from course_utils.tooling.grading.judge import observations, reference_problems
from course_utils.tooling.grading.kernel import KERNEL_NAME, kernelspec
from course_utils.tooling.grading.reference import (
    expected_notebook,
    lab_blocked,
    lab_references,
    redact_package,
    resolve,
)
from course_utils.tooling.grading.sandbox import Limits, SandboxSpec, UidPool, sandbox_status

CSV_COLUMNS = ["student_id", "lab", "score", "max_score", "status", "reason", "flags", "sandbox"]

GRADING_CONFIG = """
# the course's own locked cells (setup, imports, data) may take longer on a busy machine than the
# limit that stops a student's looping code; a student cannot change them (nbgrader restores them)
def _timeout(cell):
    meta = cell.get("metadata", {{}}).get("nbgrader", {{}})
    instructor_code = meta.get("locked") and not meta.get("grade") and not meta.get("solution")
    return max({cell_timeout}, 300) if instructor_code else {cell_timeout}
c.Execute.timeout_func = _timeout
c.Execute.kernel_name = {kernel!r}
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:"]
c.KernelManager.transport = "ipc"
c.KernelManager.connection_file = {connection!r}
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, Execute, GetGrades, IgnorePattern,
                                    LimitOutput, SaveAutoGrades)
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from course_utils.tooling.grading.judge import JudgeHiddenChecks
from course_utils.tooling.grading.feedback import HideHiddenTests
c.Autograde.autograde_preprocessors = [Execute, JudgeHiddenChecks, IgnorePattern, ClearMetadataPreprocessor,
                                       LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
c.JudgeHiddenChecks.expected_path = {expected!r}
c.GenerateFeedback.preprocessors = [HideHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]
c.HideHiddenTests.sandboxed = {sandboxed!r}
"""


@dataclass
class GradeRow:
    student_id: str
    lab: str
    score: float
    max_score: float
    status: str  # "graded" or "error"
    reason: str = ""
    flags: list[str] = field(default_factory=list)
    sandbox: str = ""


@dataclass
class LabSetup:
    """What every student of one lab shares: built once, read-only for the students."""

    lab: str
    work: Path
    course: Path
    notebooks: list[str]
    max_score: float
    expected_path: Path
    redacted: Path  # the redacted copy of course_utils
    package_dir: Path  # the real course_utils
    model_dirs: dict[str, str]
    fingerprints: dict[str, str]
    sandboxed: bool
    sandbox_note: str
    limits: Limits
    smoke: bool
    cell_timeout: int
    threads: int  # torch/OpenMP threads of every kernel (the reference run's and the students')
    uids: list[int | None]  # the kernel's user per slot (slot 0: the reference run); None: not root


def _model_dirs() -> dict[str, str]:
    """Complete converted models in the course cache, made readable for the sandbox users."""
    from course_utils.models import make_readable

    out = {}
    models = cache_dir() / "models"
    for folder in sorted(models.glob("*")) if models.is_dir() else []:
        if folder.is_dir() and (folder / "COMPLETE").exists():
            try:
                make_readable(folder)
            except PermissionError:
                pass
            out[folder.name] = str(folder)
    return out


def _kernel_env(setup: LabSetup) -> dict[str, str]:
    from course_utils.runtime import SMOKE_ENV

    bin_dir = str(Path(os.sys.executable).parent)
    return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", SMOKE_ENV: "1" if setup.smoke else "0",
            GRADING_ENV: "1", "PYTHONHASHSEED": "0", "PYTHONPATH": str(setup.package_dir.parent),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": str(setup.threads), "MKL_NUM_THREADS": str(setup.threads),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}


def _sandbox_dirs(base: Path, uid: int | None, files_from: Path | None) -> dict[str, Path]:
    """Scratch, runtime and cache folders for one kernel, owned by its user."""
    if base.exists():
        shutil.rmtree(base)
    dirs = {name: base / name for name in ("scratch", "cache", "jupyter")}
    for path in dirs.values():
        path.mkdir(parents=True)
    # ZeroMQ's ipc sockets live here: a unix socket path has at most 107 bytes, so this folder sits
    # at a short path of its own, whatever the grading folder's depth (removed by _remove_runtime)
    dirs["runtime"] = Path(tempfile.mkdtemp(prefix="llm-grade-", dir=_SHORT_TMP))
    if files_from is not None:
        shutil.copytree(files_from, dirs["scratch"], dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    if uid is not None:
        for name in ("scratch", "runtime", "cache"):
            for path in [dirs[name], *dirs[name].rglob("*")]:
                os.lchown(path, uid, uid)
    return dirs


_SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else None


def _remove_runtime(dirs: dict[str, Path]) -> None:
    shutil.rmtree(dirs["runtime"], ignore_errors=True)


def _write_kernelspec(setup: LabSetup, base: Path, workdir: Path, uid: int | None, package_copy: Path,
                      files_from: Path | None) -> dict[str, Path]:
    dirs = _sandbox_dirs(base, uid, files_from)
    for name in setup.model_dirs:
        target = dirs["cache"] / "models" / name
        target.mkdir(parents=True)
        if uid is not None:
            os.chown(target.parent, uid, uid)
            os.chown(target, uid, uid)
    spec = SandboxSpec(workdir=str(workdir), scratch=str(dirs["scratch"]), runtime_dir=str(dirs["runtime"]),
                       cache_dir=str(dirs["cache"]), model_dirs=setup.model_dirs, package_dir=str(setup.package_dir),
                       package_copy=str(package_copy), env=_kernel_env(setup), uid=uid, limits=setup.limits,
                       sandboxed=setup.sandboxed)
    spec_path = base / "sandbox.json"
    spec_path.write_text(spec.to_json())
    kdir = dirs["jupyter"] / "kernels" / KERNEL_NAME
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps(kernelspec(spec_path)))
    os.chmod(base, 0o755)
    return dirs




def _run_reference(setup: LabSetup, root: Path) -> None:
    """Execute the reference run and store its observations as the expected values."""
    from nbclient import NotebookClient
    from traitlets.config import Config

    references = lab_references(root / "solutions" / setup.lab)
    expected: dict[str, dict[str, list]] = {}
    for name in setup.notebooks:
        nb = expected_notebook(root / "solutions" / setup.lab / f"{name}.ipynb", references)
        base = setup.work / "reference-run" / name
        workdir = base / "notebook"
        workdir.mkdir(parents=True)
        dirs = _write_kernelspec(setup, base / "sandbox", workdir, setup.uids[0], setup.package_dir,
                                 root / "solutions" / setup.lab)
        for stale in dirs["scratch"].glob("*.ipynb"):
            stale.unlink()  # the reference run does not need the solution on its disk
        config = Config()
        config.KernelManager.transport = "ipc"
        config.KernelManager.connection_file = str(dirs["runtime"] / "kernel.json")
        saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR")}
        os.environ["JUPYTER_PATH"] = str(dirs["jupyter"])
        os.environ["JUPYTER_RUNTIME_DIR"] = str(dirs["runtime"])
        try:
            client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=max(setup.cell_timeout * 5, 600),
                                    allow_errors=True, config=config, startup_timeout=300,
                                    resources={"metadata": {"path": str(workdir)}})
            client.execute()
        finally:
            _remove_runtime(dirs)
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        cells: dict[str, list] = {}
        problems = []
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                continue
            errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs if o.get("output_type") == "error"]
            records = observations(cell)
            if errors:
                problems.append(f"{meta['grade_id']} raised {errors[0][:500]}")
            if "BEGIN HIDDEN TESTS" in cell.source and not records:
                problems.append(f"{meta['grade_id']} has hidden tests but made no hidden.check observation")
            problems += [f"{meta['grade_id']}: {p}" for p in reference_problems(records)]
            cells[meta["grade_id"]] = records
        if problems:
            raise RuntimeError(f"the reference run of {setup.lab}/{name} cannot grade (fix the solution or its "
                               "hidden tests):\n  " + "\n  ".join(problems))
        expected[name] = cells
    setup.expected_path.write_text(json.dumps(expected))


def prepare_lab(lab: str, work: Path, root: Path, *, smoke: bool, cell_timeout: int, limits: Limits,
                sandbox: str, uids: list[int | None], threads: int = 1) -> LabSetup:
    """Step 1: the course folder, the redacted package, the fingerprints and the reference run."""
    import course_utils

    available, note = sandbox_status()
    if sandbox == "require" and not available:
        raise RuntimeError(f"a sandbox is required but not available: {note}")
    sandboxed = available and sandbox != "off"
    if not sandboxed:
        note = f"UNSANDBOXED ({note if sandbox != 'off' else 'sandbox turned off'}): student code can read " \
               "this machine's files; hidden tests are still judged outside the student's kernel"
    env = tool_env(smoke)
    course = prepare_course(lab, work / "course", root, env)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        max_score = float(gb.find_assignment(lab).max_score)
    blocked = lab_blocked(root / "solutions" / lab)
    package_dir = Path(course_utils.__file__).resolve().parent
    redacted = redact_package(package_dir, work / "redacted", blocked, lab)
    for path in [work / "redacted", *(work / "redacted").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    known = plagiarism.fingerprints(plagiarism.reference_sources((d, resolve(d)) for d in blocked))
    for name in lab_notebooks(lab, root):
        src = nbformat.read(root / "solutions" / lab / f"{name}.ipynb", as_version=4)
        solution = {c.metadata["nbgrader"]["grade_id"]: c.source for c in src.cells
                    if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
        for grade_id, source in solution.items():
            known.update({k: f"the instructor's solution ({grade_id})" for k in plagiarism.fingerprints({"": source})})
    os.chmod(work, 0o755)
    setup = LabSetup(lab=lab, work=work, course=course, notebooks=lab_notebooks(lab, root), max_score=max_score,
                     expected_path=work / "expected.json", redacted=redacted, package_dir=package_dir,
                     model_dirs=_model_dirs(), fingerprints=known, sandboxed=sandboxed,
                     sandbox_note=note, limits=limits, smoke=smoke, cell_timeout=cell_timeout, threads=threads,
                     uids=uids)
    _run_reference(setup, root)
    return setup


def check_submission(folder: Path, notebooks: list[str]) -> str | None:
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


def _student_flags(setup: LabSetup, folder: Path) -> list[str]:
    flags = []
    for name in setup.notebooks:
        try:
            nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
        except Exception:
            continue
        cells = {}
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.get("cell_type") == "code" and meta.get("solution"):
                cells[str(meta.get("grade_id", "?"))] = cell.get("source", "")
        flags += plagiarism.flags_for(cells, setup.fingerprints)
    return flags


def _reason(autograded: Path, notebooks: list[str], limits: Limits) -> str:
    failed, notes = [], []
    for name in notebooks:
        nb = nbformat.read(autograded / f"{name}.ipynb", as_version=4)
        for grade_id, ename in failed_grade_cells(nb).items():
            failed.append(f"{grade_id} ({'timed out' if ename in ('KeyboardInterrupt', 'CellTimeoutError') else ename})")
        for cell in nb.cells:
            for o in cell.get("outputs", []):
                if o.get("output_type") != "error":
                    continue
                text = f"{o.get('ename')} {o.get('evalue')}"
                if o.get("ename") == "ReferenceBlockedError":
                    ref = str(o.get("evalue", "")).split(" ", 1)[0]
                    notes.append(f"called the blocked reference {ref}, which earns nothing")
                elif o.get("ename") == "MemoryError" or "can't allocate memory" in text or "DefaultCPUAllocator" in text:
                    notes.append(f"a cell ran out of its memory limit ({limits.memory_bytes / 2**30:g} GiB)")
    parts = list(dict.fromkeys(notes))
    if failed:
        parts.append("failed: " + "; ".join(failed))
    return "; ".join(parts)


def _autograde_failure(log: str, code: int) -> str:
    if code == -9:
        return "grading stopped: the notebook ran past the time limit for a whole submission"
    lowered = log.lower()
    if any(k in lowered for k in ("celltimeouterror", "timeout waiting for", "cell execution timed out")):
        return ("a cell ran past the time limit and the kernel did not stop when interrupted, so grading stopped "
                "there (the rest of the notebook earns nothing)")
    if "kernel died" in lowered or "deadkernel" in lowered:
        return "the notebook's kernel died while running (e.g. os._exit, a crash or a killed process), so it could not be graded"
    return "nbgrader could not autograde this submission (see the instructor log)"


def grade_student(setup: LabSetup, student: str, submissions: Path, slot: int, student_timeout: int,
                  feedback_dir: Path | None) -> GradeRow:
    """Step 2 for one student, in its own course folder and sandbox."""
    lab = setup.lab
    label = "bwrap" if setup.sandboxed else "none"
    folder = submissions / student / lab
    if not folder.is_dir():
        return GradeRow(student, lab, 0.0, setup.max_score, "error", f"no {lab}/ folder in the submission",
                        sandbox=label)
    problem = check_submission(folder, setup.notebooks)
    if problem:
        return GradeRow(student, lab, 0.0, setup.max_score, "error", problem, sandbox=label)
    flags = _student_flags(setup, folder)
    base = setup.work / "students" / student
    course = base / "course"
    shutil.copytree(setup.course, course, ignore=shutil.ignore_patterns("nbgrader_config.py"))
    dest = course / "submitted" / student / lab
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    uid = setup.uids[slot + 1]
    workdir = course / "autograded" / student / lab
    dirs = _write_kernelspec(setup, base / "sandbox", workdir, uid, setup.redacted, folder)
    try:
        from course_utils.tooling.grading.course import base_config

        config = base_config(course, cell_timeout=setup.cell_timeout, autograding=True) + GRADING_CONFIG.format(
            cell_timeout=int(setup.cell_timeout), kernel=KERNEL_NAME, connection=str(dirs["runtime"] / "kernel.json"),
            expected=str(setup.expected_path), sandboxed=setup.sandboxed)
        (course / "nbgrader_config.py").write_text(config)
        env = tool_env(setup.smoke, JUPYTER_PATH=str(dirs["jupyter"]), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]))
        args = [lab, student] + (["--feedback"] if feedback_dir is not None else [])
        code, log = run_worker(args, course, student_timeout, env)
        (base / "grading.log").write_text(log)
        autograded = course / "autograded" / student / lab
        if code != 0 or not all((autograded / f"{n}.ipynb").exists() for n in setup.notebooks):
            return GradeRow(student, lab, 0.0, setup.max_score, "error", _autograde_failure(log, code), flags, label)
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            sub = gb.find_submission(lab, student)
            score, max_score = float(sub.score), float(sub.max_score)
        row = GradeRow(student, lab, round(score, 4), round(max_score, 4), "graded",
                       _reason(autograded, setup.notebooks, setup.limits), flags, label)
        src = course / "feedback" / student / lab
        if feedback_dir is not None and src.is_dir():
            target = Path(feedback_dir) / student / lab
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src, target)
        return row
    finally:
        shutil.rmtree(base / "sandbox", ignore_errors=True)  # nothing the kernel wrote outlives its run
        _remove_runtime(dirs)


def grade_submissions(lab: str, submissions: str | os.PathLike, out_csv: str | os.PathLike | None = None, *,
                      root: Path | None = None, work_dir: Path | None = None, feedback_dir: Path | None = None,
                      cell_timeout: int = 60, student_timeout: int = 900, smoke: bool = True, progress: bool = True,
                      jobs: int = 1, sandbox: str = "auto", limits: Limits | None = None) -> list[GradeRow]:
    """Autograde every student in ``submissions`` (nbgrader ``submitted/`` layout) for ``lab``.

    ``jobs`` students are graded at once, each in its own sandbox. ``sandbox`` is ``"auto"`` (use
    bubblewrap when it works here, else grade unsandboxed and say so), ``"require"`` or ``"off"``.
    Returns one :class:`GradeRow` per student folder (sorted by student id), writes them to
    ``out_csv`` when given, and writes feedback HTML to ``feedback_dir/<student>/<lab>/`` (default:
    ``feedback/`` beside the CSV). ``work_dir`` keeps the grader's folders and logs (default: a
    temporary folder, removed afterwards).
    """
    from tqdm.auto import tqdm

    root = course_root(root)
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise ValueError(f"submissions={str(submissions)!r} is not a folder (expected DIR/<student_id>/{lab}/...)")
    if cell_timeout <= 0 or student_timeout <= 0:
        raise ValueError("cell_timeout and student_timeout must be positive numbers of seconds")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if sandbox not in ("auto", "require", "off"):
        raise ValueError(f"sandbox={sandbox!r}: expected 'auto', 'require' or 'off'")
    lab_notebooks(lab, root)
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    tmp = tempfile.mkdtemp(prefix=f"grade-{lab}-") if work_dir is None else None
    work = Path(tmp or work_dir).resolve()
    if work.exists() and tmp is None:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if feedback_dir is None and out_csv is not None:
        feedback_dir = Path(out_csv).resolve().parent / "feedback"
    uid_pool = None
    try:
        # one thread per kernel in SMOKE mode (results then do not depend on --jobs); full-size labs
        # share the machine's cores between the students graded at once
        threads = 1 if smoke else max(1, (os.cpu_count() or 1) // jobs)
        if os.geteuid() == 0 and sandbox != "off":
            uid_pool = UidPool(jobs + 1)
            uids: list[int | None] = list(uid_pool.uids)
        else:
            uids = [None] * (jobs + 1)
        setup = prepare_lab(lab, work, root, smoke=smoke, cell_timeout=cell_timeout, limits=limits or Limits(),
                            sandbox=sandbox, threads=threads, uids=uids)
        if progress:
            print(f"[grade] {lab}: sandbox: {setup.sandbox_note}")
        slots = list(range(jobs))
        lock = threading.Lock()

        def one(student: str) -> GradeRow:
            with lock:
                slot = slots.pop()
            try:
                return grade_student(setup, student, submissions, slot, student_timeout, feedback_dir)
            finally:
                with lock:
                    slots.append(slot)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            rows = list(tqdm(pool.map(one, students), total=len(students), desc=f"grading {lab}", unit="student",
                             disable=not progress))
    finally:
        if uid_pool is not None:
            uid_pool.release()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if out_csv is not None:
        write_csv(rows, out_csv)
    return rows


def write_csv(rows: list[GradeRow], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in sorted(rows, key=lambda r: r.student_id):
            writer.writerow([r.student_id, r.lab, f"{r.score:g}", f"{r.max_score:g}", r.status, r.reason,
                             " | ".join(r.flags), r.sandbox])
    return path


def grade_reference_solution(lab: str, *, root: Path | None = None, work_dir: Path | None = None,
                             smoke: bool = True) -> dict:
    """Autograde the instructor's own solution as a student called ``reference``."""
    root = course_root(root)
    with tempfile.TemporaryDirectory(prefix=f"ref-{lab}-") as tmp:
        subs = Path(tmp) / "submitted"
        shutil.copytree(root / "solutions" / lab, subs / "reference" / lab)
        rows = grade_submissions(lab, subs, root=root, work_dir=work_dir, smoke=smoke, progress=False)
    row = rows[0]
    return {"lab": lab, "score": row.score, "max_score": row.max_score, "status": row.status,
            "reason": row.reason, "full_marks": row.status == "graded" and row.score == row.max_score > 0}
