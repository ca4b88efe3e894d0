"""The run report of ``llm-course run``: ``report.json``, ``report.md`` and ``index.html``.

For every notebook the report shows its status and run time, its metrics as a table with the
claim bounds of ``claims/<stem>.toml`` marked pass or fail (claims of the other mode are listed,
unchecked), and, in ``index.html``, the figures the notebook drew (extracted from the executed
notebook's outputs into ``figures/``) and a link to the executed notebook rendered as HTML with
nbconvert (``html/<stem>.html``). ``report.json`` holds the same data for programs.

Layout of the output folder::

    report.json  report.md  index.html
    figures/<notebook stem>/cell<NN>_<k>.png     images the notebook displayed
    html/<notebook stem>.html                    the executed notebook, rendered
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from course_utils.tooling.claims import load_claims

IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rows(result: Any) -> list[dict[str, Any]]:
    """One row per metric and per claim: ``metric, value, bound, status, why`` where status is
    ``pass``, ``fail``, ``unchecked`` (a claim of the other mode) or ``""`` (no claim)."""
    checked = {c["metric"]: c for c in result.claims}
    rows: dict[str, dict[str, Any]] = {}
    for name, value in result.metrics.items():
        rows[name] = {"metric": name, "value": value, "bound": "", "status": "", "why": ""}
    for name, c in checked.items():
        row = rows.setdefault(name, {"metric": name, "value": c["value"], "bound": "", "status": "", "why": ""})
        row.update(bound=c["bound"] + ("" if c["mode"] == "both" else f" ({c['mode']})"),
                   status="pass" if c["ok"] else "fail", why=c["problem"] or c["why"])
    try:
        specs = load_claims(result.notebook)
    except (ValueError, OSError):  # a broken claims file is reported by the run itself
        specs = {}
    for name, spec in specs.items():
        if name in checked:
            continue
        bound = " and ".join(f"{key} {spec[key]}" for key in ("min", "max", "gt", "lt") if key in spec)
        row = rows.setdefault(name, {"metric": name, "value": result.metrics.get(name, ""), "bound": "",
                                     "status": "", "why": ""})
        row.update(bound=f"{bound} ({spec.get('mode', 'both')} mode)", status="unchecked", why=spec.get("why", ""))
    return list(rows.values())


def extract_figures(executed: str | Path, out_dir: Path) -> list[Path]:
    """Write every image an executed notebook displayed into ``out_dir`` and return the paths."""
    import nbformat

    path = Path(executed)
    if not path.exists():
        return []
    nb = nbformat.read(path, as_version=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        k = 0
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for mime, ext in IMAGE_TYPES.items():
                if mime not in data:
                    continue
                target = out_dir / f"cell{index:02d}_{k}.{ext}"
                payload = data[mime]
                if isinstance(payload, list):
                    payload = "".join(payload)
                target.write_bytes(payload.encode() if ext == "svg" else base64.b64decode(payload))
                written.append(target)
                k += 1
                break  # one file per output (a PNG and its SVG twin are the same figure)
    return written


def render_notebook_html(executed: str | Path, target: Path) -> Path | None:
    """The executed notebook as a standalone HTML page (nbconvert's lab template); None when the
    notebook is missing."""
    from nbconvert import HTMLExporter

    path = Path(executed)
    if not path.exists():
        return None
    body, _ = HTMLExporter().from_filename(str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target


def _markdown(results: list[Any], grades: list[dict[str, Any]], *, smoke: bool, device: str,
              ok: bool) -> str:
    lines = [f"# Course run ({'SMOKE' if smoke else 'full'} mode, device {device}): {'ok' if ok else 'FAILED'}", "",
             "| notebook | status | seconds | metrics | claims passed |", "| --- | --- | ---: | ---: | ---: |"]
    for r in results:
        passed = sum(c["ok"] for c in r.claims)
        lines.append(f"| {Path(r.notebook).name} | {r.status} | {r.seconds:.1f} | {len(r.metrics)} | "
                     f"{passed}/{len(r.claims)} |")
    for r in results:
        lines += ["", f"## {Path(r.notebook).name}: {r.status}, {r.seconds:.1f} s", ""]
        if r.error:
            lines += ["```", r.error, "```", ""]
        rows = _rows(r)
        if rows:
            lines += ["| metric | value | claim | |", "| --- | ---: | --- | --- |"]
            for row in rows:
                mark = {"pass": "✓", "fail": "✗ FAILED", "unchecked": "not checked in this mode"}.get(row["status"], "")
                lines.append(f"| {row['metric']} | {_fmt(row['value'])} | {row['bound']} | {mark} |")
    if grades:
        lines += ["", "## Reference solutions autograded with nbgrader", "",
                  "| lab | score | max | full marks |", "| --- | ---: | ---: | --- |"]
        for g in grades:
            lines.append(f"| {g['lab']} | {g['score']} | {g['max_score']} | {'yes' if g['full_marks'] else 'NO'} |")
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status-ok { color: #11702b; font-weight: 600; } .status-failed { color: #b00020; font-weight: 700; }
.claim-pass { background: #e3f6e8; } .claim-fail { background: #fde2e4; font-weight: 700; }
.claim-unchecked { color: #777; }
figure { display: inline-block; margin: .5rem; } figure img { max-width: 34rem; border: 1px solid #ddd; }
pre.error { background: #fff4f4; border: 1px solid #e0b4b4; padding: .5rem; white-space: pre-wrap; }
section { border-top: 2px solid #eee; margin-top: 2rem; }
"""


def _html(results: list[Any], grades: list[dict[str, Any]], figures: dict[str, list[Path]],
          pages: dict[str, Path | None], out_dir: Path, *, smoke: bool, device: str, ok: bool) -> str:
    e = html.escape
    mode = "SMOKE" if smoke else "full"
    when = time.strftime("%Y-%m-%d %H:%M")
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>LLM Engineering: course run</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Course run: {mode} mode on {e(device)}, "
             f"<span class='status-{'ok' if ok else 'failed'}'>{'ok' if ok else 'FAILED'}</span></h1>",
             f"<p>{when}. Each notebook's metrics with the claim bounds of <code>claims/&lt;notebook&gt;.toml</code>; "
             "a claim of the other mode is listed but not checked.</p>",
             "<table id='summary'><tr><th>notebook</th><th>status</th><th>seconds</th><th>claims passed</th>"
             "<th>figures</th><th>executed notebook</th></tr>"]
    for r in results:
        stem = Path(r.notebook).stem
        page = pages.get(stem)
        link = f"<a href='{e(page.relative_to(out_dir).as_posix())}'>{e(stem)}.html</a>" if page else "—"
        passed = sum(c["ok"] for c in r.claims)
        parts.append(f"<tr><td><a href='#{e(stem)}'>{e(Path(r.notebook).name)}</a></td>"
                     f"<td class='status-{e(r.status)}'>{e(r.status)}</td><td class='num'>{r.seconds:.1f}</td>"
                     f"<td class='num'>{passed}/{len(r.claims)}</td><td class='num'>{len(figures.get(stem, []))}</td>"
                     f"<td>{link}</td></tr>")
    parts.append("</table>")
    if grades:
        parts.append("<h2>Reference solutions autograded with nbgrader</h2><table id='grades'>"
                     "<tr><th>lab</th><th>score</th><th>max</th><th>full marks</th></tr>")
        for g in grades:
            full = "yes" if g["full_marks"] else "NO"
            parts.append(f"<tr><td>{e(g['lab'])}</td><td class='num'>{g['score']}</td>"
                         f"<td class='num'>{g['max_score']}</td><td class='status-{'ok' if g['full_marks'] else 'failed'}'>"
                         f"{full}</td></tr>")
        parts.append("</table>")
    for r in results:
        stem = Path(r.notebook).stem
        parts.append(f"<section id='{e(stem)}'><h2>{e(Path(r.notebook).name)}: "
                     f"<span class='status-{e(r.status)}'>{e(r.status)}</span>, {r.seconds:.1f} s</h2>")
        if r.error:
            parts.append(f"<pre class='error'>{e(r.error)}</pre>")
        rows = _rows(r)
        if rows:
            parts.append("<table class='metrics'><tr><th>metric</th><th>value</th><th>claim</th><th></th>"
                         "<th>why</th></tr>")
            for row in rows:
                status = row["status"]
                cls = f" class='claim-{status}'" if status else ""
                mark = {"pass": "pass", "fail": "FAIL", "unchecked": "not checked"}.get(status, "")
                parts.append(f"<tr{cls}><td>{e(row['metric'])}</td><td class='num'>{e(_fmt(row['value']))}</td>"
                             f"<td>{e(row['bound'])}</td><td>{mark}</td><td>{e(row['why'])}</td></tr>")
            parts.append("</table>")
        for fig in figures.get(stem, []):
            rel = fig.relative_to(out_dir).as_posix()
            parts.append(f"<figure><img src='{e(rel)}' alt='{e(stem)}: {e(fig.stem)}'>"
                         f"<figcaption>{e(fig.stem)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(results: list[Any], grades: list[dict[str, Any]], out_dir: Path, *, smoke: bool,
                 device: str) -> tuple[Path, Path]:
    """Write ``report.json``, ``report.md`` and ``index.html`` (with ``figures/`` and ``html/``)
    into ``out_dir``; returns the paths of ``report.json`` and ``report.md`` (``index.html`` is
    beside them). ``results`` are :class:`course_utils.tooling.runner.NotebookResult` objects."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = all(r.status == "ok" for r in results) and all(g.get("full_marks") for g in grades)
    data = {"smoke": smoke, "device": device, "notebooks": [asdict(r) for r in results], "grades": grades, "ok": ok}
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=2))
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(results, grades, smoke=smoke, device=device, ok=ok))
    figures, pages = {}, {}
    for r in results:
        stem = Path(r.notebook).stem
        if r.output:
            figures[stem] = extract_figures(r.output, out_dir / "figures" / stem)
            pages[stem] = render_notebook_html(r.output, out_dir / "html" / f"{stem}.html")
    (out_dir / "index.html").write_text(
        _html(results, grades, figures, pages, out_dir, smoke=smoke, device=device, ok=ok), encoding="utf-8")
    return json_path, md_path
