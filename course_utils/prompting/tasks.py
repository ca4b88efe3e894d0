"""The chapter's checkable reasoning tasks (made by ``scripts/make_prompting_data.py``,
documented in ``course_utils/data/prompting/README.md``).

* **reasoning**: arithmetic word problems and unit-conversion chains with 1, 2 or 3 steps,
  an integer ``answer`` and a step-by-step ``rationale`` ending in ``The answer is N.``;
* **game24**: all 1820 four-number puzzles (1–13), ``solvable`` and every ``solutions``.

Both have a fixed ``train`` / ``heldout`` split.
"""

from __future__ import annotations

import json
from pathlib import Path

from course_utils import checks

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "prompting"
SPLITS = ("train", "heldout")
KINDS = ("arithmetic", "units")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate with `python scripts/make_prompting_data.py`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_reasoning(split: str = "train", *, kind: str | None = None, steps: int | None = None) -> list[dict]:
    """Reasoning problems of one split, optionally only one ``kind`` and number of ``steps``.
    Each row: ``id``, ``kind``, ``steps``, ``question``, ``answer`` (int), ``rationale``."""
    checks.one_of("split", split, SPLITS)
    if kind is not None:
        checks.one_of("kind", kind, KINDS)
    if steps is not None:
        checks.one_of("steps", steps, (1, 2, 3))
    rows = _read_jsonl(DATA_DIR / f"reasoning_{split}.jsonl")
    return [r for r in rows if (kind is None or r["kind"] == kind) and (steps is None or r["steps"] == steps)]


def load_game24(split: str = "heldout", *, solvable: bool | None = None) -> list[dict]:
    """Game-of-24 puzzles: ``numbers`` (4 ints), ``solvable``, ``n_solutions``, ``solutions``."""
    checks.one_of("split", split, SPLITS)
    if solvable is not None:
        checks.instance("solvable", solvable, bool)
    rows = _read_jsonl(DATA_DIR / f"game24_{split}.jsonl")
    return [r for r in rows if solvable is None or r["solvable"] == solvable]
