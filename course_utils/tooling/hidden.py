"""What a lab's hidden tests call: observations of the student's functions, judged elsewhere.

A hidden test never decides pass or fail inside the student's kernel, where the student's code
could change any function the test calls. It only *observes*:

* ``check(name, value)`` — a value computed by the student's code on the test's inputs;
* ``check_raises(name, fn, *args, exc=ValueError, match="top_k")`` — that a call raises;
* ``check_bound(name, value, low=..., high=...)`` — a number that must lie within bounds.

While a lab is graded (``$LLM_COURSE_GRADING`` is set), each observation leaves the kernel as a
display output of type :data:`MIME`, holding plain data (JSON; tensors as base64 bytes). The grader,
in its own process, compares the student's observations with those of the course's reference
implementation run on the same inputs (see ``course_utils.tooling.grading.judge``). Tolerances and
bounds are taken from the reference run, never from the student's kernel. Outside grading every
call here does nothing, so a solution notebook runs as a plain notebook.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Callable
from typing import Any

from course_utils.runtime import GRADING_ENV

MIME = "application/vnd.llm-course.check+json"


def encode(value: Any) -> Any:
    """Plain JSON for a value: tensors and arrays become ``{"__array__": {dtype, shape, data}}``
    (floats as float64 bytes, so bf16/fp16/fp32 values are exact), non-finite floats
    ``{"__float__": "nan"}``; lists, tuples and str-keyed dicts recursively."""
    import numpy as np

    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        kind = "bool" if t.dtype == torch.bool else "float" if t.is_floating_point() else "int"
        if t.is_complex():
            raise TypeError("hidden.check does not take complex tensors")
        arr = t.to(torch.float64 if kind == "float" else torch.int64 if kind == "int" else torch.bool).numpy()
        return {"__array__": {"dtype": str(value.dtype), "kind": kind, "shape": list(arr.shape),
                              "data": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()}}
    if isinstance(value, np.ndarray) or isinstance(value, np.generic) and not isinstance(value, np.bool_):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"hidden.check takes real numeric arrays, got dtype {arr.dtype}")
        kind = "bool" if arr.dtype.kind == "b" else "float" if arr.dtype.kind == "f" else "int"
        cast = {"float": np.float64, "int": np.int64, "bool": np.bool_}[kind]
        return {"__array__": {"dtype": f"numpy.{arr.dtype}", "kind": kind, "shape": list(arr.shape),
                              "data": base64.b64encode(np.ascontiguousarray(arr.astype(cast)).tobytes()).decode()}}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("hidden.check takes dicts with str keys only")
        return {k: encode(v) for k, v in value.items()}
    raise TypeError(f"hidden.check cannot observe a {type(value).__name__}; pass tensors, arrays, numbers, "
                    "strings, or lists/dicts of them")


def _emit(record: dict[str, Any]) -> None:
    if not os.environ.get(GRADING_ENV):
        if os.environ.get("NBGRADER_EXECUTION") == "autograde":  # nbgrader by hand: nothing would judge
            raise RuntimeError("this lab's hidden tests are judged outside the notebook: grade it with "
                               "`llm-course grade`, not `nbgrader autograde` (which would pass them unchecked)")
        return
    from IPython.display import display

    display({MIME: record}, raw=True)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a hidden check needs a non-empty name, got {name!r}")


def check(name: str, value: Any, *, rtol: float | None = None, atol: float | None = None,
          exact: bool = False, alternatives: list[Any] | None = None) -> None:
    """Observe ``value``: it must equal the reference's value for the same name (tensors and
    floats within ``rtol``/``atol``, by default torch's tolerances for the reference's dtype;
    ``exact=True`` asks for bit equality; shapes and dtypes must match). ``alternatives`` are other
    acceptable values, as computed in the reference run (e.g. the result of the same computation
    in float32 when a bfloat16 rounding may flip a tie)."""
    _check_name(name)
    spec = {"rtol": rtol, "atol": atol, "exact": bool(exact)}
    if alternatives is not None and os.environ.get(GRADING_ENV):
        spec["alternatives"] = [encode(a) for a in alternatives]
    _emit({"name": name, "kind": "value", "value": encode(value), "spec": spec})


def check_raises(name: str, fn: Callable[..., Any], *args: Any, exc: type[BaseException] = ValueError,
                 match: str | None = None, **kwargs: Any) -> None:
    """Observe whether ``fn(*args, **kwargs)`` raises ``exc`` (or a subclass) with ``match``
    (case-insensitive) in its message."""
    _check_name(name)
    try:
        fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - what was raised is the observation
        outcome = {"raised": [c.__name__ for c in type(err).__mro__], "message": str(err)[:1000]}
    else:
        outcome = {"raised": None, "message": ""}
    _emit({"name": name, "kind": "raises", "value": outcome,
           "spec": {"exc": exc.__name__, "match": match}})


def check_bound(name: str, value: Any, *, low: float | None = None, high: float | None = None) -> None:
    """Observe a number that must lie in ``[low, high]`` (the bounds of the reference run)."""
    _check_name(name)
    _emit({"name": name, "kind": "bound", "value": encode(value), "spec": {"low": low, "high": high}})
