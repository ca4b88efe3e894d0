"""The run report (course_utils.tooling.report): report.json, a readable report.md, index.html."""

from __future__ import annotations

import base64
import json

import nbformat

from course_utils.tooling.report import extract_figures, write_report
from course_utils.tooling.runner import NotebookResult

# a 1x1 PNG
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5e6b2c3"
    "0000000049454e44ae426082")).decode()


def _executed(path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plot()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": PIXEL, "text/plain": "<Figure>"}),
                    nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# x"), cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_write_report(tmp_path):
    good = _executed(tmp_path / "00_x.ipynb")
    claims = [{"metric": "acc", "ok": True, "value": 0.5, "bound": ">= 0.4", "mode": "both", "why": "learns",
               "problem": ""},
              {"metric": "gap", "ok": False, "value": 0.1, "bound": "<= 1e-06", "mode": "smoke", "why": "",
               "problem": "0.1 is not <= 1e-06"}]
    results = [NotebookResult("notebooks/00_x.ipynb", "ok", 1.5, {"acc": 0.5, "n": 3}, output=str(good),
                              claims=claims[:1]),
               NotebookResult("notebooks/01_y.ipynb", "failed", 2.0, {"gap": 0.1}, error="broken claims: gap",
                              output=str(tmp_path / "missing.ipynb"), claims=claims[1:])]
    grades = [{"lab": "lab00", "score": 3.0, "max_score": 3.0, "full_marks": True}]
    json_path, md_path = write_report(results, grades, tmp_path / "build", smoke=True, device="cpu")
    data = json.loads(json_path.read_text())
    assert data["ok"] is False and data["notebooks"][0]["metrics"] == {"acc": 0.5, "n": 3}
    md = md_path.read_text()
    assert "| 00_x.ipynb | ok | 1.5 | 2 | 1/1 |" in md  # the summary row
    assert "| acc | 0.5 | >= 0.4 | ✓ |" in md and "| n | 3 |  |  |" in md  # one metrics table per notebook
    assert "| gap | 0.1 | <= 1e-06 (smoke) | ✗ FAILED |" in md and "broken claims: gap" in md and "lab00" in md
    page = (tmp_path / "build" / "index.html").read_text()
    assert page.count("class='claim-pass'") == 1 and page.count("class='claim-fail'") == 1
    assert "<img src='figures/00_x/cell01_0.png'" in page
    assert (tmp_path / "build" / "figures" / "00_x" / "cell01_0.png").read_bytes() == base64.b64decode(PIXEL)
    assert "href='html/00_x.html'" in page and (tmp_path / "build" / "html" / "00_x.html").exists()


def test_extract_figures_skips_a_missing_notebook(tmp_path):
    assert extract_figures(tmp_path / "none.ipynb", tmp_path / "figs") == []
