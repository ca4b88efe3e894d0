"""claims/<notebook>.toml: bounds on a run's recorded metrics, checked per mode."""

from __future__ import annotations

import pytest

from course_utils.tooling.claims import check_claims, load_claims
from tests.conftest import ROOT


def _course(tmp_path, text):
    (tmp_path / "claims").mkdir(parents=True)
    (tmp_path / "claims" / "02_x.toml").write_text(text)
    return tmp_path


def test_bounds_modes_and_metric_references(tmp_path):
    root = _course(tmp_path, '''
"gap" = { max = 1e-6, why = "same rotation" }
"loss.final" = { lt = "loss.initial", min = 0, why = "it learns" }
"acc@5" = { min = 0.9, mode = "full", why = "full mode only" }
"steps" = { min = 1, max = 1, mode = "smoke", why = "smoke only" }
''')
    metrics = {"gap": 0.0, "loss.final": 2.5, "loss.initial": 5.5, "acc@5": 0.5, "steps": 1}
    smoke = {c.metric: c for c in check_claims("notebooks/02_x.ipynb", metrics, smoke=True, root=root)}
    assert set(smoke) == {"gap", "loss.final", "steps"} and all(c.ok for c in smoke.values())
    assert smoke["loss.final"].bound == ">= 0 and < loss.initial (5.5)"
    full = {c.metric: c for c in check_claims("notebooks/02_x.ipynb", metrics, smoke=False, root=root)}
    assert set(full) == {"gap", "loss.final", "acc@5"}
    assert not full["acc@5"].ok and full["acc@5"].problem == "0.5 is not >= 0.9"
    broken = check_claims("notebooks/02_x.ipynb", {**metrics, "gap": 1e-3, "loss.initial": 2.0}, smoke=True, root=root)
    assert {c.metric for c in broken if not c.ok} == {"gap", "loss.final"}
    missing = check_claims("notebooks/02_x.ipynb", {"gap": float("nan")}, smoke=True, root=root)
    problems = {c.metric: c.problem for c in missing}
    assert problems["steps"] == "the run recorded no number for it"
    assert "recorded no number for 'loss.initial'" in problems["loss.final"] and problems["gap"]


def test_bad_claims_files_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="needs at least one of min/max/gt/lt"):
        load_claims("02_x", _course(tmp_path / "a", '"gap" = { why = "x" }'))
    with pytest.raises(ValueError, match="unknown keys"):
        load_claims("02_x", _course(tmp_path / "b", '"gap" = { max = 1, maximum = 2 }'))
    with pytest.raises(ValueError, match="mode must be"):
        load_claims("02_x", _course(tmp_path / "c", '"gap" = { max = 1, mode = "always" }'))
    assert load_claims("99_none", tmp_path / "a") == {}


def test_the_course_claims_files_load():
    for path in sorted((ROOT / "claims").glob("*.toml")):
        assert load_claims(path.stem, ROOT), path.name
