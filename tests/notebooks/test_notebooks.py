"""Every chapter notebook and lab solution executes headlessly in SMOKE mode (one process), and
the claims of claims/<notebook>.toml that apply in SMOKE mode hold."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from course_utils.tooling.claims import claims_file, load_claims
from course_utils.tooling.headers import header_problems
from course_utils.tooling.runner import course_notebooks
from tests.conftest import ROOT

NOTEBOOKS = course_notebooks(ROOT)
ALL_SOURCES = NOTEBOOKS + sorted((ROOT / "labs").glob("lab*/*.ipynb"))


def _id(p):
    return f"{p.parent.name}/{p.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_executes(path, executed):
    """It runs, and every SMOKE-mode claim holds (the runner marks a broken claim as failed)."""
    result = executed(path)
    broken = [c for c in result.claims if not c["ok"]]
    assert not broken, (
        f"{path.name}: {len(broken)} of {len(result.claims)} SMOKE claims broken (claims/{path.stem}.toml):\n"
        + "\n".join(f"  {c['metric']} = {c['value']!r}: claim {c['bound']}: {c['problem']}"
                    + (f"  ({c['why']})" if c["why"] else "") for c in broken))
    assert result.status == "ok", f"{path.name} failed:\n{result.error}"
    smoke_claims = [m for m, spec in load_claims(path, ROOT).items() if spec.get("mode", "both") != "full"]
    assert sorted(c["metric"] for c in result.claims) == sorted(smoke_claims)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_has_reviewed_claims(path):
    """Each chapter states bounds for the numbers its prose relies on, some checked in SMOKE mode; a
    lab's claims file (its claims may all need full mode: fine-tuned > base) is checked when it exists."""
    chapter = path.parent.name == "notebooks"
    if not chapter and not claims_file(path, ROOT).exists():
        pytest.skip(f"no claims/{path.stem}.toml yet (the lab's owner writes it)")
    assert claims_file(path, ROOT).exists(), f"write claims/{path.stem}.toml (see CONTRIBUTING.md)"
    claims = load_claims(path, ROOT)
    assert claims and all(spec.get("why") for spec in claims.values()), "every claim says why in `why`"
    if chapter:
        assert any(spec.get("mode", "both") != "full" for spec in claims.values()), "no claim is checked in SMOKE mode"


@pytest.mark.parametrize("path", ALL_SOURCES, ids=_id)
def test_notebook_is_committed_clean(path):
    """Committed without outputs, python3 kernel, a parameters cell first among code cells."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs committed"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    params = code[0].source
    for knob in ("SMOKE", "DEVICE"):
        assert knob in params, f"parameters cell lacks {knob}"
    assert "colab.research.google.com" in json.dumps(nb.cells[0].source), "first cell needs a Colab link"


CHAPTERS = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]


@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_chapter_shows_its_code_and_ends_with_exercises_and_papers(path):
    """show_source where a mechanism is taught; an Exercises section with at least two auto-checked
    exercises (check_function/check_value); papers and further reading after it; no prose sending the
    reader to a course_utils .py file."""
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert code.count("show_source(") >= 3, "show the code where it is taught (course_utils.show.show_source)"
    starts = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and re.search(r"^## Exercises", c.source, re.M)]
    assert starts, "the chapter needs an '## Exercises' section"
    tail = nb.cells[starts[0]:]
    checks = [c for c in tail if c.cell_type == "code" and ("check_function(" in c.source or "check_value(" in c.source)]
    assert len(checks) >= 2, "at least two exercises check themselves (course_utils.exercise)"
    assert any(c.cell_type == "markdown" and re.search(r"^#+ .*(papers|further reading)", c.source, re.I | re.M)
               for c in tail), "papers and further reading after the exercises"
    assert not re.search(r"course_utils/[\w/]*\.py", prose), "show the code with show_source instead"


@pytest.mark.parametrize("path", ALL_SOURCES, ids=_id)
def test_colab_badge_and_setup_cell_use_the_project_url(path):
    """The repository URL is written once, in pyproject.toml; every notebook, solution and released
    lab agrees with it (rewrite them with scripts/sync_notebook_headers.py)."""
    assert header_problems(path, ROOT) == []


def test_there_are_notebooks_and_labs():
    assert any(p.parent.name == "notebooks" for p in NOTEBOOKS)
    assert any(p.parent.parent.name == "solutions" for p in NOTEBOOKS)


def test_readme_course_map_lists_every_chapter_and_lab():
    """The README's course map has a row per chapter notebook, naming it, and names every lab."""
    readme = (ROOT / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if re.match(r"\| \d\d \|", line)}
    for nb in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        assert nb.stem[:2] in rows and f"`{nb.stem}`" in rows[nb.stem[:2]], f"README course map: no row for {nb.name}"
    for lab in (ROOT / "solutions").glob("lab*"):
        assert f"`{lab.name}`" in readme, f"README course map does not name {lab.name}"
