"""Shared fixtures: the course root, one execution per notebook per session, GPU skipping, the
``slow`` marker on notebook and lab tests, and deprecated APIs called by course_utils as errors."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

from course_utils.runtime import ROOT_ENV, SMOKE_ENV

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault(ROOT_ENV, str(ROOT))
os.environ.setdefault(SMOKE_ENV, "1")


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that executes notebooks: those using the ``executed`` fixture and all
    of tests/labs (`pytest -m "not slow"` is the fast unit loop); skip ``gpu`` tests without CUDA."""
    import torch

    for item in items:
        if "executed" in getattr(item, "fixturenames", ()) or Path(str(item.fspath)).parent.name == "labs":
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --- deprecated APIs called by course_utils fail the test ----------------------------------------
# pyproject's filterwarnings turns FutureWarning/DeprecationWarning into errors when the warning is
# attributed to a course_utils module. Libraries often attribute it elsewhere (transformers warns
# about `past_key_values` from torch's Module.__call__), so this hook also looks at the call stack:
# the first frame outside the warning's own package (and torch's module-call plumbing) is the
# caller of the deprecated API; when that caller is course_utils, the warning is raised as an error.
_COURSE = str(ROOT / "course_utils")
_PLUMBING = ("torch/nn/modules/module.py", "torch/utils/_contextlib.py", "contextlib.py")


def _package_of(filename: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1:]
        return rest[0] if rest else ""
    return filename


def _deprecated_call_from_course_utils() -> bool:
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename == __file__
                                 or Path(frame.f_code.co_filename).name == "warnings.py"):
        frame = frame.f_back  # this hook and the warnings machinery
    if frame is None:
        return False
    origin = _package_of(frame.f_code.co_filename)  # the package that called warnings.warn
    while frame is not None:
        name = frame.f_code.co_filename
        if _package_of(name) != origin and not name.endswith(_PLUMBING):
            return name.startswith(_COURSE)
        frame = frame.f_back
    return False


@pytest.fixture(autouse=True)
def _deprecated_api_from_course_utils_is_an_error():
    saved = warnings.showwarning

    def check(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DeprecationWarning, FutureWarning)) and _deprecated_call_from_course_utils():
            raise category(f"course_utils calls a deprecated API: {message} ({filename}:{lineno})")
        if issubclass(category, DeprecationWarning):
            return  # other DeprecationWarnings stay ignored, as pyproject's filterwarnings says
        # anything else goes where it would have gone: pytest's warning summary
        warnings._showwarnmsg_impl(warnings.WarningMessage(message, category, filename, lineno, file, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always", DeprecationWarning)  # every call is seen, not only the first per line
        warnings.simplefilter("always", FutureWarning)
        warnings.showwarning = check
        try:
            yield
        finally:
            warnings.showwarning = saved


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
