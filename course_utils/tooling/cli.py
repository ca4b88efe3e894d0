"""The ``llm-course`` command: doctor, run, release, grade, lab, serve."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _resolve_notebooks(names: list[str]) -> list[Path]:
    from course_utils.runtime import repo_root
    from course_utils.tooling.runner import course_notebooks

    if not names:
        return course_notebooks()
    root, out = repo_root(), []
    every = course_notebooks(root)
    for name in names:
        path = Path(name)
        if path.exists():
            out.append(path.resolve())
            continue
        matches = [p for p in every if p.stem == name or p.name == name or p.stem.startswith(name)]
        if not matches:
            raise SystemExit(f"llm-course run: no notebook matches {name!r}; notebooks: "
                             + ", ".join(p.stem for p in every))
        out.extend(matches)
    return out


def cmd_doctor(args) -> int:
    from course_utils.tooling.doctor import doctor

    return 1 if doctor(load_models=not args.quick) else 0


def cmd_run(args) -> int:
    from course_utils.tooling.runner import run_course

    report = run_course(_resolve_notebooks(args.notebooks), smoke=not args.full, device=args.device,
                        out_dir=Path(args.out) if args.out else None, grade=not args.no_grade)
    return 0 if report["ok"] else 1


def cmd_release(args) -> int:
    from course_utils.tooling.grading import release

    for path in release(args.labs or None):
        print(f"released {path}")
    return 0


def cmd_grade(args) -> int:
    from course_utils.tooling.grading import Limits, grade_submissions

    out = Path(args.out or f"build/grades/{args.lab}.csv")
    rows = grade_submissions(args.lab, args.submissions, out, cell_timeout=args.cell_timeout,
                             student_timeout=args.student_timeout, smoke=not args.full,
                             work_dir=Path(args.work_dir) if args.work_dir else None, jobs=args.jobs,
                             sandbox=args.sandbox, limits=Limits(memory_bytes=int(args.memory_gb * 2**30)))
    for r in rows:
        print(f"{r.student_id:<24} {r.score:g}/{r.max_score:g}  {r.status}  {r.reason}"
              + (f"  [flags: {' | '.join(r.flags)}]" if r.flags else ""))
    if any(r.sandbox == "none" for r in rows):
        print("\nWARNING: graded WITHOUT a sandbox: student code could read this machine's files "
              "(install bubblewrap; see `llm-course doctor`).")
    print(f"\nGrades: {out}\nFeedback (hidden tests withheld): {out.resolve().parent / 'feedback'}")
    return 0


def cmd_lab(args) -> int:
    from course_utils.runtime import repo_root

    root = repo_root()
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={root}", *args.jupyter_args]
    print("Opening JupyterLab on", root)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


def cmd_serve(args) -> int:
    from course_utils.serving.api import main as serve_main

    return serve_main(args.serve_argv)


def cmd_weather(args) -> int:
    from course_utils.agents.weather import main as weather_main

    return weather_main(args.weather_argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-course", description="LLM Engineering course tools")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="check packages, offline models and GPU; print a fix for each failure")
    d.add_argument("--quick", action="store_true", help="skip loading the offline models")
    d.set_defaults(func=cmd_doctor)

    r = sub.add_parser("run", help="execute notebooks and lab solutions, autograde the solutions, write build/index.html and build/report.md")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", default=True, help="tiny sizes, minutes on a CPU (default)")
    mode.add_argument("--full", action="store_true", help="full sizes: the runs that prove each chapter's claims")
    r.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    r.add_argument("--out", help="output folder (default build/)")
    r.add_argument("--no-grade", action="store_true", help="skip autograding the reference solutions")
    r.add_argument("notebooks", nargs="*", help="notebooks to run (paths, names or prefixes such as 00); default all")
    r.set_defaults(func=cmd_run)

    rel = sub.add_parser("release", help="regenerate labs/ (student versions) from solutions/ with nbgrader")
    rel.add_argument("labs", nargs="*", help="lab names, e.g. lab00_sampling; default all")
    rel.set_defaults(func=cmd_release)

    g = sub.add_parser("grade", help="autograde a folder of submissions: DIR/<student_id>/<LAB>/<notebook>.ipynb")
    g.add_argument("lab")
    g.add_argument("--submissions", required=True, help="nbgrader submitted/ layout")
    g.add_argument("--out", help="CSV path (default build/grades/LAB.csv); feedback/ is written beside it")
    g.add_argument("--cell-timeout", type=int, default=60, help="seconds a cell may run before it is interrupted")
    g.add_argument("--student-timeout", type=int, default=900, help="seconds for one whole submission")
    g.add_argument("--full", action="store_true", help="grade with SMOKE off (labs run at full size)")
    g.add_argument("--work-dir", help="keep nbgrader's course folder and logs here")
    g.add_argument("--jobs", "-j", type=int, default=1, help="students graded at once, each in its own sandbox")
    g.add_argument("--memory-gb", type=float, default=6.0, help="memory limit of each process of a student's kernel")
    g.add_argument("--sandbox", choices=["auto", "require", "off"], default="auto",
                   help="auto: bubblewrap when it works here, else unsandboxed (said in the output and the CSV)")
    g.set_defaults(func=cmd_grade)

    from course_utils.serving.cli_args import add_serve_arguments

    srv = sub.add_parser("serve", help="OpenAI-compatible server (chapter 11): the course engine or vLLM; "
                         "vLLM's flag names (--host --port --api-key --max-model-len --served-model-name)")
    add_serve_arguments(srv)
    srv.set_defaults(func=cmd_serve)

    from course_utils.agents.weather import build_parser as weather_parser

    w = sub.add_parser("weather", help="the weather API of chapter 09 on a loopback port, until Ctrl-C "
                       "(--port, --fault-rate, --seed, --slow-seconds, --retry-after)",
                       parents=[weather_parser()], add_help=False)
    w.set_defaults(func=cmd_weather)

    lab = sub.add_parser("lab", help="open JupyterLab on the course")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed to jupyter lab")
    lab.set_defaults(func=cmd_lab)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":  # the server parses its own flags (same parser)
        args.serve_argv = list(sys.argv[2:] if argv is None else argv[1:])
    if args.command == "weather":  # so does the weather service
        args.weather_argv = list(sys.argv[2:] if argv is None else argv[1:])
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"llm-course {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
