"""Feedback that never shows a hidden test.

Three layers, applied to the autograded notebook before nbgrader renders the feedback HTML:

1. hidden-test regions are cut out of every cell's source;
2. no output produced after the first hidden test started running is returned: every cell from the
   first cell holding hidden tests on (including cells the student added after it) keeps only a
   one-line verdict written by the grader. Unsandboxed grading returns no student output at all,
   since the kernel could read hidden tests from the disk before they ran;
3. every output that is returned is scanned for hidden-test lines, which are redacted.

A notice at the top says what was withheld and why.
"""

from __future__ import annotations

import builtins
import re

import nbformat

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
REDACTED = "[hidden test line withheld]"
_SAFE_ERRORS = {name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)}
_SAFE_ERRORS |= {"CellTimeoutError", "HiddenTestFailed", "ReferenceBlockedError", "DeadKernelError"}


def hidden_lines(nb) -> list[str]:
    """The non-trivial source lines inside hidden-test regions (stripped)."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type != "code" or HIDDEN_BEGIN not in cell.source:
            continue
        inside = False
        for line in cell.source.splitlines():
            if HIDDEN_BEGIN in line:
                inside = True
            elif HIDDEN_END in line:
                inside = False
            elif inside and len(line.strip()) >= 8:
                lines.append(line.strip())
    return sorted(set(lines), key=len, reverse=True)


def strip_hidden_source(source: str) -> str:
    kept, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
            kept.append(line[: line.index(HIDDEN_BEGIN)] + "# (hidden tests are not shown)")
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept)


def redact(text: str, lines: list[str]) -> str:
    for line in lines:
        if line in text:
            text = text.replace(line, REDACTED)
    return text


def _redact_output(output, lines: list[str]) -> None:
    if "text" in output:
        output["text"] = redact(output["text"], lines)
    if "evalue" in output:
        output["evalue"] = redact(output["evalue"], lines)
    if "traceback" in output:
        output["traceback"] = [redact(t, lines) for t in output["traceback"]]
    for mime, value in list(output.get("data", {}).items()):
        if isinstance(value, str):
            output["data"][mime] = redact(value, lines)
        elif isinstance(value, list):
            output["data"][mime] = [redact(v, lines) if isinstance(v, str) else v for v in value]
        elif not mime.startswith("image/"):  # JSON payloads: drop rather than scan structures
            del output["data"][mime]
    # an output whose code lines were spaced or escaped differently still must not pass
    if any(_loose(line) in _loose(str(output)) for line in lines if len(line) >= 16):
        output.clear()
        output.update(nbformat.v4.new_output("stream", name="stdout", text=REDACTED + "\n"))


def _loose(text: str) -> str:
    return re.sub(r"\s+", "", text.replace("\\n", "").replace("&quot;", '"').replace("&#x27;", "'"))


def _verdict(cell) -> str:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    errors = [o.get("ename", "error") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if meta.get("grade") and not meta.get("solution"):
        if not errors:
            return "Test passed (its output is withheld because this cell runs hidden tests)."
        name = errors[0] if errors[0] in _SAFE_ERRORS else "an error"
        checks = cell.get("metadata", {}).get("llm_course", {}).get("hidden_checks")
        detail = f"; {checks['failed']} of {checks['total']} hidden checks failed" if checks and checks["failed"] else ""
        return f"Test failed ({name}{detail}). Its output is withheld because this cell runs hidden tests."
    return "Output withheld: it was produced after the hidden tests started running."


NOTICE = ("**About this feedback.** Your score comes from the visible tests and from hidden tests. To keep the "
          "hidden tests hidden, every output from the first cell that runs hidden tests onwards is withheld "
          "(cells you added after it included): each test cell shows only whether it passed. Outputs before that "
          "point are shown, with any line of a hidden test removed.")
NOTICE_UNSANDBOXED = ("**About this feedback.** This lab was graded without a sandbox, so no output of your "
                      "notebook is returned: each test cell shows only whether it passed. Run your notebook "
                      "yourself to see its outputs.")


def hide_hidden_tests(nb, *, sandboxed: bool = True):
    """Apply the three layers to an autograded notebook (in place) and return it."""
    lines = hidden_lines(nb)
    first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and HIDDEN_BEGIN in c.source),
                 len(nb.cells))
    if not sandboxed:
        first = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.source = strip_hidden_source(cell.source)
        if i >= first:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=_verdict(cell) + "\n")]
        else:
            for output in cell.outputs:
                _redact_output(output, lines)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(NOTICE if sandboxed else NOTICE_UNSANDBOXED))
    return nb


def _make_preprocessor():
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Bool

    class HideHiddenTests(NbGraderPreprocessor):
        """Feedback preprocessor: :func:`hide_hidden_tests` on the autograded notebook."""

        sandboxed = Bool(True, help="whether the notebook ran in the grading sandbox").tag(config=True)

        def preprocess(self, nb, resources):
            return hide_hidden_tests(nb, sandboxed=self.sandboxed), resources

    return HideHiddenTests


HideHiddenTests = _make_preprocessor()
