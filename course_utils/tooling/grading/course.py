"""nbgrader course folders: the lab's source, its gradebook, and the nbgrader processes that use them.

Course layout for nbgrader (``nbgrader_config.py``): ``solutions/<lab>/`` is the *source*
(instructor version) and ``labs/<lab>/`` the generated *release* (student version). Release and
grading work in private course folders of their own, so nothing a student hands in can touch the
course.

Every process started here runs the Python that runs this code, with that Python's ``bin/`` first on
``PATH``: nbgrader shells out to ``alembic`` and ``jupyter``, which must come from the same
environment even when it is not activated (``/path/to/venv/bin/llm-course grade ...`` from cron).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from course_utils.runtime import METRICS_ENV, SMOKE_ENV, repo_root


def tool_env(smoke: bool, **extra: str) -> dict[str, str]:
    """The environment of every process the grader starts."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env[SMOKE_ENV] = "1" if smoke else "0"
    env.pop(METRICS_ENV, None)
    env.setdefault("PYTHONHASHSEED", "0")
    env.update(extra)
    return env


def run_nbgrader(args: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> tuple[int, str]:
    """``python -m nbgrader ARGS`` in its own process group; the whole group is killed on timeout."""
    return _run([sys.executable, "-m", "nbgrader", *args], cwd, timeout, env)


def run_worker(args: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> tuple[int, str]:
    """One student's autograde and feedback (:mod:`.worker`), killed as a group on timeout."""
    return _run([sys.executable, "-m", "course_utils.tooling.grading.worker", *args], cwd, timeout, env)


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        return -9, out + f"\n[timed out after {timeout:.0f} s]"


def course_root(root: Path | None = None) -> Path:
    return Path(root) if root else repo_root()


def lab_notebooks(lab: str, root: Path | None = None) -> list[str]:
    """Names (without .ipynb) of the notebooks of a lab's solution folder."""
    src = course_root(root) / "solutions" / lab
    if not src.is_dir():
        known = sorted(p.name for p in (course_root(root) / "solutions").glob("lab*"))
        raise ValueError(f"unknown lab {lab!r}: no folder {src}; labs: {known}")
    return sorted(p.stem for p in src.glob("*.ipynb"))


def base_config(work: Path, **options) -> str:
    """The nbgrader config of a private course folder ``work`` (settings shared with the course's own
    ``nbgrader_config.py``, from :mod:`course_utils.tooling.nbgrader_settings`)."""
    from course_utils.tooling.nbgrader_settings import config_lines

    lines = config_lines(work, source_directory="source", release_directory="release",
                         db_path=work / "gradebook.db", **options)
    return "c = get_config()  # noqa: F821\n" + "\n".join(lines) + "\n"


def prepare_course(lab: str, work: Path, root: Path, env: dict[str, str]) -> Path:
    """A private nbgrader course in ``work`` with the lab generated into its gradebook."""
    if work.exists():
        shutil.rmtree(work)
    (work / "source").mkdir(parents=True)
    shutil.copytree(root / "solutions" / lab, work / "source" / lab,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    (work / "nbgrader_config.py").write_text(base_config(work))
    code, out = run_nbgrader(["generate_assignment", lab, "--force"], work, 600, env)
    if code != 0:
        raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{out[-3000:]}")
    return work


def release(labs: list[str] | None = None, *, root: Path | None = None, out_dir: Path | None = None) -> list[Path]:
    """Generate the student version of each lab (``labs/<lab>/``) from ``solutions/<lab>/``.

    Runs ``nbgrader generate_assignment`` in a private course folder (a fresh gradebook, so no
    earlier submission interferes) and copies the release into ``out_dir`` (default ``labs/``).
    Returns the written folders.
    """
    root = course_root(root)
    labs = labs or sorted(p.name for p in (root / "solutions").glob("lab*") if p.is_dir())
    out_dir = Path(out_dir) if out_dir else root / "labs"
    env = tool_env(True)
    written = []
    for lab in labs:
        lab_notebooks(lab, root)  # validates the name
        with tempfile.TemporaryDirectory(prefix=f"release-{lab}-") as tmp:
            work = prepare_course(lab, Path(tmp) / "course", root, env)
            target = out_dir / lab
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(work / "release" / lab, target)
            for nb_path in target.glob("*.ipynb"):  # normalise so that a release is reproducible
                nb = nbformat.read(nb_path, as_version=4)
                nb.metadata.pop("llm_course", None)  # the reference map is the instructor's
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
