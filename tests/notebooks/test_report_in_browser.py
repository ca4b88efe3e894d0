"""``llm-course run``'s index.html in a real headless Chromium (Debian's ``chromium``): the page
loads, every figure resolves, the executed notebooks' HTML pages open, and no claim is marked
failing. Two quick notebooks keep it light (their executions are shared with test_notebooks)."""

from __future__ import annotations

import os

import pytest

from course_utils.tooling.report import write_report
from tests.chromium import chromium_path, headless_chromium
from tests.conftest import ROOT

QUICK = ("01_scaling_laws", "02_modern_architectures")


def test_index_html_renders_in_headless_chromium(executed, tmp_path):
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (.ci/run does: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    results = [executed(ROOT / "notebooks" / f"{stem}.ipynb") for stem in QUICK]
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    write_report(results, [], tmp_path, smoke=True, device="cpu")
    with headless_chromium() as browser:
        browser.open((tmp_path / "index.html").as_uri())
        assert browser.evaluate("document.title") == "LLM Engineering: course run"
        assert browser.evaluate("document.querySelectorAll('#summary tr').length") == len(QUICK) + 1
        images = browser.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert len(images) >= len(QUICK), "each notebook draws at least one figure"
        assert all(width > 0 for _, width in images), [src for src, width in images if not width]
        assert browser.evaluate("document.querySelectorAll('.claim-pass').length") > 0
        failing = browser.evaluate("Array.from(document.querySelectorAll('.claim-fail')).map(r => r.innerText)")
        assert failing == [], failing
        links = browser.evaluate("Array.from(document.querySelectorAll('#summary a[href^=\"html/\"]'))"
                                 ".map(a => a.href)")
        assert len(links) == len(QUICK)
        browser.open(links[0])
        assert browser.evaluate("document.querySelectorAll('.jp-Cell').length") > 5  # nbconvert's rendered cells
