"""Submissions a cheating (or careless) student would hand in, built from a lab's solution and release.

Each builder returns a notebook. Code cells a student adds carry no nbgrader metadata; they are
inserted after the setup cells (``early``: before any hidden test has run) or appended (``late``).
"""

from __future__ import annotations

import base64
import re
import textwrap
from pathlib import Path

import nbformat

from tests.labs.helpers import copy, grade_cells, solution_cells

_STUB = re.compile(r"^([ \t]*)raise NotImplementedError\(\)", re.MULTILINE)

# what the attacks print; the attack code spells each marker in two pieces, so that a marker in the
# feedback can only come from an output, never from the cell's own source
MARK_ISOLATED = "ISOLATED-OK"
MARK_LEAK = "LEAKED-FILE"
MARK_NO_NET = "NO-NETWORK-OK"
MARK_NET = "NETWORK-REACHED"
MARK_WROTE = "WROTE-OUTSIDE"
MARK_ALLOCATED = "ALLOCATED-64-GIB"
MARK_LATE = "LATE-THREAD-PRINT"


def _split(marker: str) -> str:
    """A Python expression that evaluates to ``marker`` without containing it."""
    half = len(marker) // 2
    return f"({marker[:half]!r} + {marker[half:]!r})"


def as_student(solution):
    """What a student hands in: the solution's code without the hidden tests a student never sees
    (the grader restores every test cell from the lab's source anyway)."""
    from course_utils.tooling.grading.feedback import strip_hidden_source

    nb = copy(solution)
    for cell in grade_cells(nb):
        cell.source = strip_hidden_source(cell.source)
    nb.metadata.pop("llm_course", None)
    return nb


def _setup_index(nb) -> int:
    """Index just after the locked setup cells (before the first solution cell)."""
    first_solution = nb.cells.index(solution_cells(nb)[0])
    return first_solution


def add_cell(nb, source: str, *, early: bool):
    out = copy(nb)
    cell = nbformat.v4.new_code_cell(textwrap.dedent(source).strip())
    if early:
        out.cells.insert(_setup_index(out), cell)
    else:
        out.cells.append(cell)
    return out


def replace_solution(solution, release, grade_id: str, body: str):
    """The solution with one solution cell's stub body replaced by ``body`` (indented to match)."""
    nb = copy(solution)
    stub = next(c for c in solution_cells(release) if c.metadata["nbgrader"]["grade_id"] == grade_id).source
    cell = next(c for c in solution_cells(nb) if c.metadata["nbgrader"]["grade_id"] == grade_id)
    body = textwrap.dedent(body).strip("\n")
    cell.source = _STUB.sub(lambda m: "\n".join(m.group(1) + line for line in body.splitlines()), stub)
    return nb


def replace_cell_source(nb, grade_id: str, source: str):
    out = copy(nb)
    cell = next(c for c in solution_cells(out) if c.metadata["nbgrader"]["grade_id"] == grade_id)
    cell.source = textwrap.dedent(source).strip()
    return out


def _import_line(name: str, dotted: str) -> str:
    module, _, attr = dotted.rpartition(".")
    return f"from {module} import {attr} as {name}"


def import_references(solution, references: dict[str, str]):
    """Every solution cell replaced by an import of the course's reference."""
    nb = copy(solution)
    for cell in solution_cells(nb):
        defined = [name for name in references if re.search(rf"^def {name}\b", cell.source, re.MULTILINE)]
        cell.source = "\n".join(_import_line(n, references[n]) for n in defined)
    return nb


def importlib_references(solution, references: dict[str, str]):
    nb = copy(solution)
    for cell in solution_cells(nb):
        defined = [name for name in references if re.search(rf"^def {name}\b", cell.source, re.MULTILINE)]
        lines = ["import importlib"]
        for n in defined:
            module, _, attr = references[n].rpartition(".")
            lines.append(f"{n} = getattr(importlib.reload(importlib.import_module({module!r})), {attr!r})")
        cell.source = "\n".join(lines)
    return nb


def exec_encoded_references(solution, references: dict[str, str]):
    nb = copy(solution)
    for cell in solution_cells(nb):
        defined = [name for name in references if re.search(rf"^def {name}\b", cell.source, re.MULTILINE)]
        code = "\n".join(_import_line(n, references[n]) for n in defined)
        blob = base64.b64encode(code.encode()).decode()
        cell.source = f"import base64\nexec(base64.b64decode({blob!r}).decode())"
    return nb


def read_reference_source(solution, references: dict[str, str]):
    """Solution cells that find the reference's source file on disk (anywhere it can look) and exec it."""
    nb = copy(solution)
    for cell in solution_cells(nb):
        defined = [name for name in references if re.search(rf"^def {name}\b", cell.source, re.MULTILINE)]
        if not defined:
            continue
        module = references[defined[0]].rpartition(".")[0]
        rel = module.replace(".", "/") + ".py"
        cell.source = textwrap.dedent(f"""
            import glob, importlib, inspect, os, sys
            _mod = importlib.import_module({module!r})
            _paths = [inspect.getsourcefile(_mod)]
            for _base in set(sys.path) | {{"/work", "/root", "/tmp", "/home", os.getcwd()}}:
                _paths += glob.glob(os.path.join(str(_base), "**", {rel!r}), recursive=True)[:50]
            _ns = {{}}
            for _p in _paths:
                try:
                    _src = open(_p).read()
                except OSError:
                    continue
                if "ReferenceBlockedError" not in _src:  # an unredacted copy: use it
                    _ns = {{"__name__": {module!r}}}
                    exec(compile(_src, _p, "exec"), _ns)
                    break
            else:
                exec(compile(open(_paths[0]).read(), _paths[0], "exec"), _ns)
        """).strip() + "\n" + "\n".join(f"{n} = _ns[{references[n].rpartition('.')[2]!r}]" for n in defined)
    return nb


def patch_everything() -> str:
    """A cell that replaces what the tests could call: comparisons in torch, numpy, math, builtins'
    helpers, the hidden-test helpers and the lab's own test helpers."""
    return """
        import builtins, math, numpy, torch, torch.testing
        torch.equal = lambda *a, **k: True
        torch.allclose = lambda *a, **k: True
        torch.testing.assert_close = lambda *a, **k: None
        torch.Tensor.equal = lambda *a, **k: True
        numpy.array_equal = lambda *a, **k: True
        numpy.allclose = lambda *a, **k: True
        math.isclose = lambda *a, **k: True
        builtins.all = lambda *a, **k: True
        import course_utils.tooling.hidden as _h
        _h.encode = lambda value: {"__array__": {"dtype": "torch.float32", "kind": "float", "shape": [0], "data": ""}}
        import course_utils.generation as _g
        for _n in dir(_g):
            if not _n.startswith("__"):
                try:
                    setattr(_g, _n, lambda *a, **k: None)
                except Exception:
                    pass
        random_logits = lambda seed, shape, dtype=torch.float32, scale=3.0: torch.zeros(shape, dtype=dtype)
    """


def getframe_tamper() -> str:
    """Code for the body of a student's function: reach into the caller's frame, look for expected
    values, and replace the hidden-check helper it calls with one that records a pass."""
    return """
        import sys
        frame = sys._getframe(1)
        for scope in (frame.f_locals, frame.f_globals):
            for key in ("expected", "want", "ref", "reference"):
                if key in scope and hasattr(scope[key], "shape"):
                    return scope[key]
        h = frame.f_globals.get("hidden")
        if h is not None:
            h.check = lambda *a, **k: None
            h.check_raises = lambda *a, **k: None
        return logits
    """


def probe_disk(paths: dict[str, Path]) -> str:
    """An early cell that looks for hidden tests, gradebooks and other students' work anywhere it can."""
    return f"""
        import glob, os
        found = []
        def look(path):
            try:
                if os.path.isdir(path):
                    for name in os.listdir(path):
                        found.append(os.path.join(path, name))
                else:
                    with open(path, "rb") as fh:
                        head = fh.read(200000)
                    # spelled in pieces, so that this cell's own source (in the student's notebook) is no match
                    if any(marker in head for marker in (b"BEGIN " + b"HIDDEN", b"SQLite " + b"format",
                                                         b"hidden" + b".check")):
                        print({_split(MARK_LEAK)}, path)
            except OSError:
                pass
        targets = {[str(p) for p in paths.values()]!r}
        for t in targets:
            look(t)
        here = os.getcwd()
        while True:
            look(here)
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
        for pattern in ("/tmp/**/*.ipynb", "/tmp/**/gradebook.db", "/work/**/gradebook.db", "/root/**/*.ipynb"):
            for p in glob.glob(pattern, recursive=True)[:200]:
                if "-packages" + os.sep not in p:  # installed packages are readable by design (nbgrader
                    look(p)                        # ships a gradebook.db among its own test files)
        for p in list(found):
            if p.endswith((".ipynb", ".db", ".html", ".csv", ".py")):
                look(p)
        print({_split(MARK_ISOLATED)}, len(found))
    """


def probe_writes(paths: dict[str, Path]) -> str:
    return f"""
        import os
        for target in {[str(p) for p in paths.values()]!r}:
            for mode in ("a", "w"):
                try:
                    with open(target, mode) as fh:
                        fh.write("tampered by a student")
                    print({_split(MARK_WROTE)}, target)
                except OSError:
                    pass
            try:
                os.remove(target)
                print({_split(MARK_WROTE)}, "removed", target)
            except OSError:
                pass
    """


def probe_network(port: int) -> str:
    return f"""
        import socket
        reached = False
        for host in ("127.0.0.1", "localhost", "10.0.2.2"):
            try:
                socket.create_connection((host, {port}), timeout=2).close()
                reached = True
            except OSError:
                pass
        try:
            socket.getaddrinfo("pypi.org", 443)
            reached = True
        except OSError:
            pass
        print({_split(MARK_NO_NET)} if not reached else {_split(MARK_NET)})
    """


LEAK_HISTORY = """
    import base64, inspect
    print("\\n".join(In))
    print(_ih)
    get_ipython().run_line_magic("history", "")
    print(base64.b64encode("\\n".join(In).encode()).decode())
    from IPython.display import HTML, display
    display(HTML("<pre>" + "\\n".join(In) + "</pre>"))
    import sys
    sys.stderr.write("\\n".join(In))
"""

LEAK_THREAD = f"""
    import threading, time
    def _later():
        for _ in range(600):
            time.sleep(0.5)
            if any("hidden" in cell for cell in In):
                print({_split(MARK_LATE)}, "\\n".join(In))
                return
    threading.Thread(target=_later, daemon=True).start()
"""

FORK_BOMB = """
    import os
    while True:
        os.fork()
"""

GIANT_ALLOCATIONS = f"""
    import torch
    try:
        big = torch.empty(64 * 2**30, dtype=torch.uint8)
        big.fill_(1)
        print({_split(MARK_ALLOCATED)})
    except (RuntimeError, MemoryError) as err:
        print("torch allocation refused:", type(err).__name__)
    chunk = bytearray(40 * 2**30)
"""


def first_grade_ids(nb) -> list[str]:
    return [c.metadata["nbgrader"]["grade_id"] for c in grade_cells(nb)]
