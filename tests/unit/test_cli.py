import subprocess
import sys

import pytest

from course_utils.tooling.cli import _resolve_notebooks, build_parser
from course_utils.tooling.doctor import run_checks


def test_parser_has_the_commands():
    parser = build_parser()
    for argv in (["doctor"], ["run", "--full", "--device", "cpu", "00"], ["release"],
                 ["grade", "lab00_sampling", "--submissions", "x"], ["lab"]):
        assert parser.parse_args(argv).func


def test_run_resolves_notebooks_by_prefix():
    found = _resolve_notebooks(["00"])
    assert found and all(p.name.startswith("00") for p in found)
    with pytest.raises(SystemExit, match="no notebook matches"):
        _resolve_notebooks(["99_nothing"])


def test_grade_rejects_unknown_lab(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "course_utils", "grade", "lab99_none", "--submissions",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown lab 'lab99_none'" in proc.stderr


def test_doctor_quick_is_all_ok_here():
    checks = run_checks(load_models=False)
    failed = [c for c in checks if not c.ok and c.name != "command llm-course on PATH"]
    assert not failed, failed
