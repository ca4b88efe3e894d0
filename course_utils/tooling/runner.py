"""Execute the course's notebooks headlessly and write a run report.

``llm-course run`` (the course's main job) executes every chapter notebook and every lab
solution with papermill, injecting ``SMOKE`` and ``DEVICE`` into the ``parameters`` cell,
autogrades the reference solutions with nbgrader, and writes under ``build/``:

* ``build/executed/<name>.ipynb`` — each executed notebook with its outputs,
* ``build/index.html``, ``build/report.md`` and ``build/report.json`` — per notebook: status,
  seconds, the metrics it recorded with :func:`course_utils.runtime.record_metric` and its claims
  (``claims/<stem>.toml``, checked for the run's mode; a broken claim fails the notebook), the
  error if any; the HTML page adds the figures and the executed notebooks rendered as HTML
  (:mod:`course_utils.tooling.report`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils.runtime import METRICS_ENV, SMOKE_ENV, read_metrics_file, repo_root
from course_utils.tooling.claims import as_dicts, check_claims
from course_utils.tooling.report import write_report

__all__ = ["NotebookResult", "course_notebooks", "execute_notebook", "run_course", "write_report"]


def course_notebooks(root: Path | None = None) -> list[Path]:
    """Chapter notebooks then lab solutions, in course order."""
    root = root or repo_root()
    return sorted((root / "notebooks").glob("[0-9]*.ipynb")) + sorted((root / "solutions").glob("lab*/*.ipynb"))


@dataclass
class NotebookResult:
    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    output: str | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)  # see course_utils.tooling.claims


def execute_notebook(path: str | os.PathLike, output: str | os.PathLike, *, smoke: bool = True,
                     device: str = "auto", parameters: dict[str, Any] | None = None,
                     timeout: int | None = None, kernel_name: str = "python3") -> NotebookResult:
    """Execute one notebook with papermill; never raises for a failing notebook.

    ``smoke`` and ``device`` are injected as ``SMOKE``/``DEVICE`` and also exported as
    ``LLM_COURSE_SMOKE`` for code that reads the environment. The notebook runs with its own
    folder as working directory. Metrics recorded by the notebook are collected through a
    temporary ``LLM_COURSE_METRICS_FILE``. ``timeout`` bounds one cell in seconds (default 30 min
    in SMOKE mode, 4 h in full mode: a full-mode table on a 2-core CPU can take most of an hour).
    """
    import papermill as pm

    if timeout is None:
        timeout = 1800 if smoke else 4 * 3600

    path, output = Path(path), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    params = {"SMOKE": smoke, "DEVICE": device, **(parameters or {})}
    fd, metrics_file = tempfile.mkstemp(prefix="metrics-", suffix=".jsonl")
    os.close(fd)
    saved = {k: os.environ.get(k) for k in (METRICS_ENV, SMOKE_ENV)}
    os.environ[METRICS_ENV] = metrics_file
    os.environ[SMOKE_ENV] = "1" if smoke else "0"
    start = time.perf_counter()
    status, error = "ok", None
    try:
        pm.execute_notebook(str(path), str(output), parameters=params, cwd=str(path.parent),
                            kernel_name=kernel_name, progress_bar=False, execution_timeout=timeout,
                            log_output=False)
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        status = "failed"
        error = _short_error(exc)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    metrics = read_metrics_file(metrics_file)
    os.unlink(metrics_file)
    claims = check_claims(path, metrics, smoke=smoke) if status == "ok" else []
    broken = [c for c in claims if not c.ok]
    if broken:
        status = "failed"
        error = "broken claims (claims/" + path.stem + ".toml): " + "; ".join(
            f"{c.metric} {c.bound}: {c.problem}" for c in broken)
    return NotebookResult(notebook=str(path), status=status, seconds=round(seconds, 2), metrics=metrics,
                          error=error, output=str(output), claims=as_dicts(claims))


def _short_error(exc: Exception) -> str:
    name = getattr(exc, "ename", type(exc).__name__)
    value = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    where = f" (cell {cell})" if cell is not None else ""
    text = f"{name}: {value}{where}"
    if not hasattr(exc, "ename"):
        text += "\n" + "".join(traceback.format_exception_only(type(exc), exc))
    return text.strip()[:2000]


def run_course(notebooks: list[Path] | None = None, *, smoke: bool = True, device: str = "auto",
               out_dir: Path | None = None, grade: bool = True) -> dict[str, Any]:
    """The main job: execute notebooks and lab solutions, autograde the reference solutions,
    and write the report. Returns the report's data."""
    from tqdm.auto import tqdm

    root = repo_root()
    out_dir = out_dir or root / "build"
    notebooks = notebooks or course_notebooks(root)
    results = []
    bar = tqdm(notebooks, desc="notebooks", unit="nb")
    for nb in bar:
        bar.set_postfix_str(nb.name)
        res = execute_notebook(nb, out_dir / "executed" / nb.name, smoke=smoke, device=device)
        bar.write(f"{'ok    ' if res.status == 'ok' else 'FAILED'} {nb.name} ({res.seconds:.1f} s)"
                  + (f"\n  {res.error.splitlines()[0]}" if res.error else ""))
        results.append(res)
    grades = []
    if grade:
        from course_utils.tooling.grading import grade_reference_solution

        labs = sorted({nb.parent.name for nb in notebooks if nb.parent.parent.name == "solutions"})
        for lab in tqdm(labs, desc="autograde reference solutions", unit="lab"):
            grades.append(grade_reference_solution(lab, root=root, work_dir=out_dir / "grading" / lab,
                                                   smoke=smoke))
    json_path, md_path = write_report(results, grades, out_dir, smoke=smoke, device=device)
    print(md_path.read_text())
    print(f"Report: {out_dir / 'index.html'} (figures, executed notebooks as HTML), {md_path} and {json_path}; "
          f"executed notebooks in {out_dir / 'executed'}")
    return json.loads(json_path.read_text())
