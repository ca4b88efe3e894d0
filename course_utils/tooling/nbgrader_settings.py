"""The nbgrader settings of the course, in one place.

Two nbgrader configurations exist: ``nbgrader_config.py`` at the course root (an instructor running
nbgrader or the formgrader by hand: ``solutions/`` is the source, ``labs/`` the release) and the
private course folder that ``llm-course release``/``grade`` write for each lab
(``course_utils.tooling.grading``). Both take their shared settings from :func:`settings`, through
:func:`configure` (a live config object) or :func:`config_lines` (the text of a config file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COURSE_ID = "llm-engineering"
SOURCE_DIRECTORY = "solutions"  # in the course folder: nbgrader's source is the instructor version
RELEASE_DIRECTORY = "labs"  # and its release the committed student version
CELL_TIMEOUT = 60  # seconds a cell may run before nbgrader interrupts it
MAX_OUTPUT_LINES = 1000  # outputs longer than this are cut in graded notebooks

# Only for autograding submissions: a loaded machine must not abort a whole notebook, so wait longer
# for the kernel to start and for its last outputs instead of raising (nbgrader's defaults are 60 s
# and 4 s, raising); never retry a cell; keep tracebacks short; create unknown students.
AUTOGRADING = {
    "Execute.execute_retries": 0,
    "Execute.startup_timeout": 300,
    "Execute.iopub_timeout": 30,
    "Execute.raise_on_iopub_timeout": False,
    "LimitOutput.max_traceback": 100,
    "Autograde.create_student": True,
}


def settings(root: str | Path, *, source_directory: str = SOURCE_DIRECTORY,
             release_directory: str = RELEASE_DIRECTORY, db_path: str | Path | None = None,
             cell_timeout: int = CELL_TIMEOUT, max_lines: int = MAX_OUTPUT_LINES,
             autograding: bool = False) -> dict[str, Any]:
    """The settings as ``{"Section.option": value}`` for a course folder ``root`` (the gradebook
    defaults to ``root/build/gradebook.db``); ``autograding`` adds :data:`AUTOGRADING`."""
    root = Path(root)
    db = Path(db_path) if db_path is not None else root / "build" / "gradebook.db"
    out: dict[str, Any] = {
        "CourseDirectory.root": str(root),
        "CourseDirectory.source_directory": source_directory,
        "CourseDirectory.release_directory": release_directory,
        "CourseDirectory.db_url": f"sqlite:///{db}",
        "CourseDirectory.course_id": COURSE_ID,
        "Execute.timeout": int(cell_timeout),
        "Execute.interrupt_on_timeout": True,
        "OverwriteCells.add_missing_cells": True,  # a deleted test cell is added back before grading
        "LimitOutput.max_lines": int(max_lines),
    }
    if autograding:
        out.update(AUTOGRADING)
    return out


def configure(c: Any, root: str | Path, **options: Any) -> Any:
    """Apply :func:`settings` to a traitlets config ``c`` (``c = get_config()`` in a config file)."""
    for key, value in settings(root, **options).items():
        section, option = key.split(".")
        setattr(getattr(c, section), option, value)
    return c


def config_lines(root: str | Path, **options: Any) -> list[str]:
    """:func:`settings` as the lines of an nbgrader config file (after ``c = get_config()``)."""
    return [f"c.{key} = {value!r}" for key, value in settings(root, **options).items()]
