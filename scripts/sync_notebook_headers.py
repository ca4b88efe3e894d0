"""Rewrite the Colab badge and the setup cell of the course's notebooks from the repository URL in
pyproject.toml ([project.urls] Repository), the one place it is written.

    python scripts/sync_notebook_headers.py            # notebooks/
    python scripts/sync_notebook_headers.py --labs     # also solutions/ (then `llm-course release`)

The tests check that every notebook, solution and released lab agrees with pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys

from course_utils.runtime import repo_root
from course_utils.tooling.headers import header_problems, repository_url, sync_header


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labs", action="store_true", help="also rewrite the lab solutions in solutions/")
    args = parser.parse_args(argv)
    root = repo_root()
    paths = sorted((root / "notebooks").glob("[0-9]*.ipynb"))
    if args.labs:
        paths += sorted((root / "solutions").glob("lab*/*.ipynb"))
    print(f"repository: {repository_url(root)}")
    for path in paths:
        if sync_header(path, root):
            print(f"rewrote {path.relative_to(root)}")
    left = {p: header_problems(p, root) for p in sorted((root / "labs").glob("lab*/*.ipynb"))}
    for path, problems in left.items():
        if problems:
            print(f"{path.relative_to(root)}: run `llm-course release` to regenerate it ({problems[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
