"""The code is `ruff check` clean (rules in pyproject.toml)."""

import shutil
import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_check_is_clean():
    ruff = shutil.which("ruff") or sys.executable
    cmd = [ruff, "check", "."] if ruff != sys.executable else [sys.executable, "-m", "ruff", "check", "."]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
