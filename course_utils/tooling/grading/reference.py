"""The lab's reference answers: which they are, blocked while grading, and run to make the expected values.

A lab's solution notebook declares, in its metadata, the ``course_utils`` reference of each
function the student writes::

    "llm_course": {"reference": {"top_k_filter": "course_utils.generation.top_k_filter", ...}}

While the lab is graded:

* the student's kernel sees a copy of ``course_utils`` in which each of those references is a stub
  that raises :class:`~course_utils.tooling.grading.blocked.ReferenceBlockedError` (importing it,
  reloading it, or reading its source file gives the stub);
* the expected observations come from a run of the solution notebook in which each of those
  functions is replaced by its reference, in a kernel where no student code runs.
"""

from __future__ import annotations

import ast
import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import nbformat

META_KEY = "llm_course"


def lab_references(lab_dir: Path) -> dict[str, str]:
    """name → dotted reference path, merged over the lab's solution notebooks."""
    refs: dict[str, str] = {}
    for path in sorted(Path(lab_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        declared = nb.metadata.get(META_KEY, {}).get("reference", {})
        if not isinstance(declared, dict):
            raise ValueError(f"{path}: metadata {META_KEY}.reference must map names to course_utils paths")
        refs.update(declared)
    for dotted in refs.values():
        resolve(dotted)  # fails loudly on a typo
    return refs


def lab_blocked(lab_dir: Path) -> list[str]:
    """Every course_utils path blocked while the lab is graded: the references, plus the metadata's
    ``blocked`` list (pieces that would hand the student the answer, e.g. RoPE's cos/sin tables)."""
    blocked = set(lab_references(lab_dir).values())
    for path in sorted(Path(lab_dir).glob("*.ipynb")):
        extra = nbformat.read(path, as_version=4).metadata.get(META_KEY, {}).get("blocked", [])
        if not isinstance(extra, list):
            raise ValueError(f"{path}: metadata {META_KEY}.blocked must be a list of course_utils paths")
        blocked.update(extra)
    for dotted in blocked:
        resolve(dotted)
    return sorted(blocked)


def resolve(dotted: str) -> Any:
    """Import ``course_utils.pkg.module.Qual.name``: the longest importable module, then attributes."""
    if not dotted.startswith("course_utils."):
        raise ValueError(f"a lab reference must live in course_utils, got {dotted!r}")
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ValueError(f"cannot import the lab reference {dotted!r}")


def _split(dotted: str, package_dir: Path) -> tuple[Path, list[str]]:
    """The source file of a reference inside ``package_dir`` (a copy of course_utils) and the
    qualified name inside that file."""
    parts = dotted.split(".")[1:]
    for cut in range(len(parts), 0, -1):
        base = package_dir.joinpath(*parts[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[cut:]
    raise ValueError(f"no source file for {dotted!r} under {package_dir}")


def _find(tree: ast.Module, qual: list[str]) -> ast.AST:
    body, node = tree.body, None
    for name in qual:
        matches = [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                   and n.name == name]
        if not matches:
            raise ValueError(f"no definition of {'.'.join(qual)} in the module")
        node = matches[-1]
        body = node.body
    return node


def _stub_lines(node: ast.AST, dotted: str, lab: str, indent: str) -> list[str]:
    message = (f"{dotted} is the course's reference answer for {lab}, so it is blocked while {lab} is "
               f"graded. Write your own implementation.")
    raise_lines = [f"{indent}from course_utils.tooling.grading.blocked import ReferenceBlockedError",
                   f"{indent}raise ReferenceBlockedError({message!r})"]
    if isinstance(node, ast.ClassDef):
        return [f"{indent}def __init__(self, *args, **kwargs):",
                *["    " + line for line in raise_lines],
                f"{indent}def __init_subclass__(cls, **kwargs):",
                *["    " + line for line in raise_lines]]
    return raise_lines


def redact_package(package_dir: Path, dest: Path, blocked: list[str], lab: str) -> Path:
    """Copy ``package_dir`` (course_utils) to ``dest/course_utils`` with the body of each blocked
    reference replaced by a stub that raises (its signature and docstring stay). No compiled files
    are copied."""
    target = Path(dest) / "course_utils"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package_dir, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    by_file: dict[Path, list[tuple[list[str], str]]] = {}
    for dotted in blocked:
        path, qual = _split(dotted, target)
        by_file.setdefault(path, []).append((qual, dotted))
    for path, items in by_file.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        spans = []
        for qual, dotted in items:
            node = _find(tree, qual)
            body = node.body
            keep = 1 if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                         and isinstance(body[0].value.value, str)) else 0  # the docstring stays
            first = body[keep].lineno if len(body) > keep else node.end_lineno + 1
            indent = " " * body[0].col_offset
            spans.append((first, node.end_lineno, _stub_lines(node, dotted, lab, indent)))
        for first, last, stub in sorted(spans, reverse=True):
            lines[first - 1:last] = stub
        path.write_text("\n".join(lines) + "\n")
        ast.parse(path.read_text())  # the stubbed module still compiles
    return target


def _defined_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def expected_notebook(solution_path: Path, references: dict[str, str]):
    """The solution notebook with each function the student writes rebound to its reference right
    after the cell that defines it: running it gives the expected observations."""
    nb = nbformat.read(solution_path, as_version=4)
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("solution"):
            continue
        names = sorted(_defined_names(cell.source) & references.keys())
        binds = []
        for name in names:
            module, _, attr = references[name].rpartition(".")
            binds.append(f"from {module} import {attr} as {name}" if attr != name else f"from {module} import {name}")
        if binds:
            cell.source += "\n\n# reference run: the course's implementation replaces the solution\n" + "\n".join(binds)
    return nb


def write_json(data: Any, path: Path) -> None:
    Path(path).write_text(json.dumps(data, sort_keys=True))
