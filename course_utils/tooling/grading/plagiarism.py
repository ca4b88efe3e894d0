"""Flags for an instructor's review: solution code that matches the reference once names are erased.

Each function or class a student defines in a solution cell is normalised — docstrings and comments
dropped, every identifier (variables, arguments, function names) and every string constant erased,
attribute names and the code's shape kept — and compared with the normalised source of the
``course_utils`` references of the lab and of the instructor's solution cells. A match is a flag,
not a zero: short functions can coincide. Solution code that runs hidden code (``exec``, ``eval``,
``compile``, ``__import__``, ``importlib``, ``marshal``, decoding base64) is flagged too.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterable

MIN_NODES = 25  # shorter bodies coincide by chance too often to flag
_DYNAMIC = {"exec", "eval", "compile", "__import__", "import_module", "loads", "b64decode", "b85decode",
            "a85decode", "decodebytes", "FunctionType", "CodeType"}


class _Erase(ast.NodeTransformer):
    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg(arg="_", annotation=None), node)

    def visit_Constant(self, node):
        if isinstance(node.value, str):
            return ast.copy_location(ast.Constant(value=""), node)
        return node

    def _strip_doc(self, node):
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None),
                                                                             ast.Constant):
            node.body = node.body[1:] or [ast.Pass()]
        node.name = "_"
        node.returns = None
        node.decorator_list = []
        self.generic_visit(node)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip_doc


def normalise(node: ast.AST) -> str:
    return ast.dump(_Erase().visit(ast.fix_missing_locations(node)), annotate_fields=False)


def _definitions(source: str) -> list[ast.AST]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def _size(node: ast.AST) -> int:
    return sum(1 for _ in ast.walk(node))


def fingerprints(sources: dict[str, str]) -> dict[str, str]:
    """normalised form → label, for each sizeable definition in the labelled sources."""
    out = {}
    for label, source in sources.items():
        for node in _definitions(textwrap.dedent(source)):
            if _size(node) >= MIN_NODES:
                out[normalise(node)] = label
    return out


def reference_sources(objects: Iterable[tuple[str, object]]) -> dict[str, str]:
    out = {}
    for label, obj in objects:
        try:
            out[label] = inspect.getsource(obj)
        except (OSError, TypeError):
            continue
    return out


def dynamic_code(source: str) -> list[str]:
    """Names of calls in ``source`` that run or decode hidden code."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name == "eval" and isinstance(f, ast.Attribute) and not node.args and not node.keywords:
                continue  # model.eval(): torch's evaluation mode, not the builtin
            if name == "loads" and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                    and f.value.id == "json":
                continue  # json.loads decodes data, not code (pickle.loads and marshal.loads stay flagged)
            if name in _DYNAMIC:
                found.add(name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found |= {m for m in mods if m.split(".")[0] in ("importlib", "marshal", "ctypes")}
    return sorted(found)


def flags_for(solution_cells: dict[str, str], known: dict[str, str]) -> list[str]:
    """Flags for one student: ``solution_cells`` maps grade_id → the student's cell source;
    ``known`` maps normalised reference forms → their labels (see :func:`fingerprints`)."""
    flags = []
    for grade_id, source in sorted(solution_cells.items()):
        for node in _definitions(textwrap.dedent(source)):
            name = getattr(node, "name", "?")
            label = known.get(normalise(node)) if _size(node) >= MIN_NODES else None
            if label:
                flags.append(f"{grade_id}: {name} matches {label} with names erased")
        dynamic = dynamic_code(source)
        if dynamic:
            flags.append(f"{grade_id}: runs or decodes hidden code ({', '.join(dynamic)})")
    return flags
