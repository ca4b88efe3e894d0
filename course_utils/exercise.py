"""Auto-checked exercises at the end of a chapter, and worked answers that quote the run.

The student fills a cell (a function, or a number), then a check cell calls
:func:`check_function` or :func:`check_value`. A check prints ✓ or ✗ with a hint and returns
True/False; it never raises, so a notebook with unattempted exercises still runs end to end
(CI executes every notebook with the exercise cells as shipped: "not attempted yet").

Open questions get a worked answer. When the answer rests on numbers the chapter measured,
:func:`show_answer` fills them in from the metrics this run recorded (``{{metric}}`` or
``{{metric:.2f}}``), so no measured number is typed into the notebook.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

NOT_ATTEMPTED = "not attempted yet: replace `raise NotImplementedError` with your code and run the cell again"


def _close(got: Any, want: Any, rtol: float, atol: float) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a course dependency
        torch = None
    if torch is not None and isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return False
        if not want.is_floating_point():
            return torch.equal(got.cpu(), want.cpu())
        return torch.allclose(got.detach().cpu().double(), want.detach().cpu().double(), rtol=rtol, atol=atol,
                              equal_nan=True)
    if hasattr(want, "shape") and hasattr(want, "dtype"):  # numpy
        import numpy as np

        got = np.asarray(got)
        return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True))
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return got == want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(
            got, want, rel_tol=rtol, abs_tol=atol)
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(got) == len(want) and all(
            _close(g, w, rtol, atol) for g, w in zip(got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(
            _close(got[k], want[k], rtol, atol) for k in want)
    return got == want


def _call(fn: Callable, case: Any) -> tuple[str, Any]:
    args, kwargs = (case.get("args", ()), case.get("kwargs", {})) if isinstance(case, dict) else (case, {})
    if not isinstance(args, tuple):
        args = (args,)
    try:
        return "value", fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as err:  # the reference may raise on a bad-input case: the student must too
        return "raised", err


def check_function(student: Callable, *, reference: Callable, cases: Sequence[Any], hint: str = "",
                   rtol: float = 1e-5, atol: float = 1e-6, name: str | None = None) -> bool:
    """Run ``student`` and ``reference`` on each case (an args tuple, or ``{"args": ..., "kwargs": ...}``)
    and compare the results (tensors and arrays with ``allclose(rtol, atol)``, numbers with
    ``isclose``, containers element-wise). Where the reference raises, the student must raise the same
    exception type. Prints the verdict and returns it."""
    label = name or getattr(student, "__name__", "your function")
    for i, case in enumerate(cases):
        want_kind, want = _call(reference, case)
        try:
            got_kind, got = _call(student, case)
        except NotImplementedError:
            print(f"… {label}: {NOT_ATTEMPTED}")
            return False
        if want_kind == "raised":
            ok = got_kind == "raised" and isinstance(got, type(want))
            detail = f"expected {type(want).__name__} to be raised, got " + (
                type(got).__name__ if got_kind == "raised" else f"the value {got!r:.80}")
        elif got_kind == "raised":
            ok, detail = False, f"raised {type(got).__name__}: {got}"
        else:
            ok = _close(got, want, rtol, atol)
            detail = f"expected {want!r:.200}, got {got!r:.200}"
        if not ok:
            print(f"✗ {label}: case {i + 1} of {len(cases)} is wrong: {detail}" + (f"\n  hint: {hint}" if hint else ""))
            return False
    print(f"✓ {label}: right on all {len(cases)} cases")
    return True


def check_value(answer: Any, *, expected: Any, rtol: float = 0.01, atol: float = 0.0, hint: str = "",
                name: str = "your answer") -> bool:
    """Compare a number (or a structure of numbers) the student computed with the expected one.
    ``answer`` is ``...`` (Ellipsis) or ``None`` while the exercise is not attempted."""
    if answer is ... or answer is None:
        print(f"… {name}: not attempted yet: replace the ... with your answer")
        return False
    if _close(answer, expected, rtol, atol):
        print(f"✓ {name}: right ({answer!r:.80})")
        return True
    print(f"✗ {name}: {answer!r:.80} is not right" + (f"\n  hint: {hint}" if hint else ""))
    return False


_PLACEHOLDER = re.compile(r"\{\{\s*([^{}:]+?)\s*(?::([^{}]+))?\}\}")


def fill_metrics(template: str, metrics: Mapping[str, Any] | None = None) -> str:
    """``template`` with each ``{{name}}`` / ``{{name:format}}`` replaced by the recorded metric
    ``name`` (:func:`course_utils.runtime.recorded_metrics` unless ``metrics`` is given).

    Raises:
        KeyError: a placeholder names a metric the run did not record (the answer would quote a
            number nobody measured).
    """
    from course_utils.runtime import recorded_metrics

    values = recorded_metrics() if metrics is None else metrics

    def fill(match: re.Match) -> str:
        name, spec = match.group(1), match.group(2)
        if name not in values:
            raise KeyError(f"the answer quotes the metric {name!r}, which this run did not record; "
                           f"recorded: {sorted(values)}")
        value = values[name]
        if spec:
            return format(value, spec)
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return _PLACEHOLDER.sub(fill, template)


def show_answer(template: str, *, title: str = "Answer (with this run's numbers)",
                metrics: Mapping[str, Any] | None = None) -> None:
    """Display a worked answer (Markdown) folded in a ``<details>`` block, its ``{{metric}}``
    placeholders filled from this run's metrics (:func:`fill_metrics`)."""
    text = fill_metrics(template, metrics)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # plain Python
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Markdown(f"<details><summary>{title}</summary>\n\n{text}\n\n</details>"))
    else:
        print(f"{title}:\n{text}")
