"""The house: chapter code never imports the course tooling, and the tooling has no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "course_utils"


def _imports(path: Path) -> set[str]:
    """Modules a file imports; ``from package import module`` counts as importing ``package.module``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*sub.split("."))).is_dir()
                found.add(sub if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_chapter_code_never_imports_the_tooling():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith("course_utils.tooling"))
                 for p in PACKAGE.rglob("*.py") if "tooling" not in p.parts and p.name != "__main__.py"}
    assert not {p: m for p, m in offenders.items() if m}


def test_no_import_cycle_in_course_utils():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                rest = cycle_from(start, nxt, seen)
                if rest:
                    return [node, *rest]
        return None

    cycles = [c for name in sorted(graph) if (c := cycle_from(name, name, {name}))]
    # a package's __init__ re-exporting its modules is not a cycle when the modules do not import it back
    assert not cycles, cycles[0]
