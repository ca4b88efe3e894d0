"""Judge a student's hidden-test observations against the reference run's, outside the student's kernel.

The student's kernel only *emits* observations (:mod:`course_utils.tooling.hidden`); this module,
running in the grader's own process, decodes them as plain data (JSON and raw bytes: no object from
the student's process is ever unpickled or called) and compares them with the observations of the
reference run. Tolerances, expected exceptions and bounds come from the reference run's records.

A test cell passes when it raised no error, and every observation the reference run made in it was
also made by the student's run — each record of that name equal to the reference's.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from course_utils.tooling.hidden import MIME

# torch.testing.assert_close's default tolerances, by the reference's dtype
_TOLERANCES = {"torch.float16": (1e-3, 1e-5), "torch.bfloat16": (1.6e-2, 1e-5), "torch.float32": (1.3e-6, 1e-5),
               "torch.float64": (1e-7, 1e-7), "numpy.float16": (1e-3, 1e-5), "numpy.float32": (1.3e-6, 1e-5),
               "numpy.float64": (1e-7, 1e-7)}
_PY_FLOAT = (1e-7, 1e-9)


def observations(cell) -> list[dict[str, Any]]:
    """The observation records a cell's outputs hold (display data of type ``MIME``)."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") in ("display_data", "execute_result") and MIME in o.get("data", {}):
            record = o["data"][MIME]
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                out.append(record)
    return out


def strip_observations(cell) -> None:
    cell["outputs"] = [o for o in cell.get("outputs", []) if MIME not in o.get("data", {})]


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__array__"}:
        a = value["__array__"]
        dtype = {"float": np.float64, "int": np.int64, "bool": np.bool_}[a["kind"]]
        data = np.frombuffer(base64.b64decode(a["data"], validate=True), dtype=dtype)
        shape = tuple(int(n) for n in a["shape"])
        if data.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("array data does not match its shape")
        return ("array", str(a["dtype"]), data.reshape(shape))
    if isinstance(value, dict) and set(value) == {"__float__"}:
        return float(value["__float__"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _decode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"not an observation value: {type(value).__name__}")


def _same(got: Any, want: Any, spec: dict[str, Any]) -> bool:
    exact = bool(spec.get("exact"))
    if isinstance(want, tuple) and want and want[0] == "array":
        if not (isinstance(got, tuple) and got and got[0] == "array"):
            return False
        _, want_dtype, w = want
        _, got_dtype, g = got
        if got_dtype != want_dtype or g.shape != w.shape:
            return False
        if exact or w.dtype != np.float64:
            return bool(np.array_equal(g, w, equal_nan=w.dtype == np.float64))
        rtol, atol = _TOLERANCES.get(want_dtype, _PY_FLOAT)
        rtol = spec["rtol"] if spec.get("rtol") is not None else rtol
        atol = spec["atol"] if spec.get("atol") is not None else atol
        finite = np.isfinite(w)
        if not np.array_equal(np.isfinite(g), finite) or not np.array_equal(g[~finite], w[~finite], equal_nan=True):
            return False
        return bool(np.allclose(g[finite], w[finite], rtol=rtol, atol=atol))
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, float) or isinstance(got, float):
        if not isinstance(got, (int, float)) or not isinstance(want, (int, float)):
            return False
        if exact or math.isnan(want) or math.isinf(want):
            return got == want or (math.isnan(got) and math.isnan(want))
        rtol = spec["rtol"] if spec.get("rtol") is not None else _PY_FLOAT[0]
        atol = spec["atol"] if spec.get("atol") is not None else _PY_FLOAT[1]
        return math.isclose(got, want, rel_tol=rtol, abs_tol=atol)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_same(g, w, spec) for g, w in zip(got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same(got[k], want[k], spec) for k in want)
    return type(got) is type(want) and got == want


def record_matches(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Does the student's record agree with the reference record of the same name? Never raises."""
    try:
        kind = want["kind"]
        spec = want.get("spec") or {}
        if got.get("kind") != kind:
            return False
        if kind == "value":
            value = _decode(got["value"])
            return any(_same(value, _decode(w), spec) for w in [want["value"], *spec.get("alternatives", [])])
        if kind == "raises":
            outcome = got["value"]
            raised = outcome.get("raised")
            if not isinstance(raised, list) or spec["exc"] not in raised:
                return False
            match = spec.get("match")
            return not match or str(match).lower() in str(outcome.get("message", "")).lower()
        if kind == "bound":
            value = _decode(got["value"])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                return False
            low, high = spec.get("low"), spec.get("high")
            return (low is None or value >= low) and (high is None or value <= high)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return False


def reference_problems(records: list[dict[str, Any]]) -> list[str]:
    """Why a reference run's records cannot serve as expected values (an instructor's bug)."""
    problems, seen = [], set()
    for r in records:
        if r["name"] in seen:
            problems.append(f"two hidden checks are named {r['name']!r}")
        seen.add(r["name"])
        if r["kind"] in ("raises", "bound") and not record_matches(r, r):
            problems.append(f"the reference itself fails the hidden check {r['name']!r}: {r['value']!r:.200}")
    return problems


def judge_cell(student: list[dict[str, Any]], expected: list[dict[str, Any]]) -> tuple[int, int]:
    """(number of the reference's checks the student's run fails, number of checks)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in student:
        by_name.setdefault(r["name"], []).append(r)
    failed = 0
    for want in expected:
        got = by_name.get(want["name"], [])
        if not got or not all(record_matches(g, want) for g in got):
            failed += 1
    return failed, len(expected)


def _make_preprocessor():
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Unicode

    class JudgeHiddenChecks(NbGraderPreprocessor):
        """Autograde step after Execute: compare each test cell's observations with the reference
        run's (``expected_path``, JSON: notebook → grade_id → records), remove them from the
        notebook, and add an error output to a cell whose hidden checks fail, so that nbgrader
        scores it 0."""

        expected_path = Unicode("", help="JSON file of the reference run's observations").tag(config=True)

        def preprocess(self, nb, resources):
            import json

            expected = json.loads(open(self.expected_path).read()) if self.expected_path else {}
            self._expected = expected.get(resources.get("unique_key", ""), {})
            return super().preprocess(nb, resources)

        def preprocess_cell(self, cell, resources, index):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.cell_type != "code":
                return cell, resources
            records = observations(cell)
            strip_observations(cell)
            if not (meta.get("grade") and not meta.get("solution")):
                return cell, resources
            want = self._expected.get(meta.get("grade_id"), [])
            failed, total = judge_cell(records, want)
            cell.metadata.setdefault("llm_course", {})["hidden_checks"] = {"failed": failed, "total": total}
            if failed and not any(o.get("output_type") == "error" for o in cell.outputs):
                import nbformat

                text = f"{failed} of {total} hidden checks differ from the reference"
                cell.outputs.append(nbformat.v4.new_output(
                    "error", ename="HiddenTestFailed", evalue=text, traceback=[f"HiddenTestFailed: {text}"]))
            return cell, resources

    return JudgeHiddenChecks


JudgeHiddenChecks = _make_preprocessor()
