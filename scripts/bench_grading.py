"""What grading costs per student: unsandboxed vs sandboxed, one student at a time vs ``--jobs 2``.

    python scripts/bench_grading.py [--students 6] [--lab lab00_sampling] [--before 8424163]

Grades N copies of the lab's reference solution (each must score full marks) in one run per setting
and prints a table: total seconds, seconds per student, and ratios against the sandboxed serial run.
``--before REV`` also times the grader of an earlier commit (checked out into a temporary git
worktree and run with its own code), e.g. the one before the sandbox existed. On a machine shared
with other work the seconds are noisy; the ratios within one run are what to read.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_class(code_root: Path, lab: str, n: int, dest: Path) -> Path:
    """``n`` students who hand in ``code_root``'s reference solution (each revision grades its own lab)."""
    subs = dest / "submitted"
    for i in range(n):
        folder = subs / f"student{i:03d}" / lab
        folder.mkdir(parents=True)
        shutil.copy(code_root / "solutions" / lab / f"{lab}.ipynb", folder)
    return subs


def grade(code_root: Path, lab: str, subs: Path, out: Path, extra: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(code_root), LLM_COURSE_ROOT=str(code_root), LLM_COURSE_SMOKE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "course_utils", "grade", lab, "--submissions", str(subs),
                           "--out", str(out), *extra], cwd=code_root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"grading failed ({extra}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rows = list(csv.DictReader(out.open()))
    wrong = [r for r in rows if r["score"] != r["max_score"]]
    if wrong:
        raise SystemExit(f"the reference solution did not get full marks ({extra}): {wrong[0]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default="lab00_sampling")
    ap.add_argument("--students", type=int, default=6)
    ap.add_argument("--before", help="also time the grader of this git revision")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        subs = make_class(ROOT, args.lab, args.students, tmp)
        settings = [("sandboxed, --jobs 1", ROOT, ["--jobs", "1"]),
                    ("sandboxed, --jobs 2", ROOT, ["--jobs", "2"]),
                    ("unsandboxed, --jobs 1", ROOT, ["--jobs", "1", "--sandbox", "off"])]
        if args.before:
            old = tmp / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before], cwd=ROOT, check=True,
                           capture_output=True)
            settings.append((f"grader at {args.before}", old, []))
            old_subs = make_class(old, args.lab, args.students, tmp / "before-class")
        results = []
        try:
            for label, code_root, extra in settings:
                seconds = grade(code_root, args.lab, old_subs if code_root != ROOT else subs, tmp / label.replace(" ", "_") / "grades.csv", extra)
                results.append((label, seconds))
                print(f"{label:<28} {seconds:8.1f} s", flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "before")], cwd=ROOT,
                               capture_output=True)
    base = dict(results)["sandboxed, --jobs 1"]
    print(f"\n{args.students} students of {args.lab} (reference solution), SMOKE mode, {os.cpu_count()} CPUs")
    print("| setting | total s | s per student | time vs sandboxed --jobs 1 |\n| --- | ---: | ---: | ---: |")
    for label, seconds in results:
        print(f"| {label} | {seconds:.1f} | {seconds / args.students:.1f} | {seconds / base:.2f}x |")
    print(f"\nspeed-up of --jobs 2: {base / dict(results)['sandboxed, --jobs 2']:.2f}x")


if __name__ == "__main__":
    main()
