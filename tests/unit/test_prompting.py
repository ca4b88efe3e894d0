"""course_utils.prompting: the reasoning data set reproduces, the Game-of-24 solver agrees with
an independent search, answer extraction and voting, Tree of Thoughts against the brute-force
solver, constrained decoding against the schema, the injection harness, LangChain beside
plain Python."""

from __future__ import annotations

import importlib.util
import random
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from course_utils.prompting import game24, tasks

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("make_prompting_data", ROOT / "scripts" / "make_prompting_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_prompting_data"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- data set


def test_reasoning_files_reproduce(tmp_path):
    gen = _generator()
    gen.main(["--out", str(tmp_path), "--skip-game24"])
    for name in ("reasoning_train.jsonl", "reasoning_heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (tasks.DATA_DIR / name).read_bytes(), name


def test_game24_split_reproduces_and_solutions_are_complete():
    """The held-out draw from the solvable flags (by the independent DFS) gives the shipped
    held-out file; a seeded sample of puzzles has exactly the shipped solution lists. (The full
    enumeration takes about a minute; the script's own run checks all of it.)"""
    gen = _generator()
    held = tasks.load_game24("heldout")
    train = tasks.load_game24("train")
    flags = {p: game24.solvable(p) for p in game24.all_puzzles()}
    keys = gen.game24_heldout_keys(flags, random.Random(1))
    assert [tuple(r["numbers"]) for r in held] == keys
    assert len(train) + len(held) == 1820 and sum(flags.values()) == 1362
    rows = {tuple(r["numbers"]): r for r in train + held}
    assert all(rows[p]["solvable"] == flags[p] for p in flags)
    for r in random.Random(0).sample(train + held, 25):
        assert r["solutions"] == game24.solutions(r["numbers"])
        assert all(game24.is_solution(s, r["numbers"]) for s in r["solutions"])


def test_reasoning_rows_are_consistent():
    rows = tasks.load_reasoning("train") + tasks.load_reasoning("heldout")
    for r in rows:
        lines = r["rationale"].splitlines()
        assert lines[-1] == f"The answer is {r['answer']}."
        assert len(lines) == r["steps"] + (2 if r["kind"] == "arithmetic" else 1)
        for line in lines:  # every equation in a rationale is true
            if "=" in line and r["kind"] == "arithmetic":
                lhs, rhs = line.split("=")
                assert eval(lhs) == int(rhs), line  # noqa: S307 (our own generated arithmetic)
    assert len(tasks.load_reasoning("heldout", kind="units", steps=2)) == 50
    with pytest.raises(ValueError, match="split"):
        tasks.load_reasoning("test")
    with pytest.raises(ValueError, match="steps"):
        tasks.load_reasoning("train", steps=4)


# ---------------------------------------------------------------- Game of 24


def test_solver_known_puzzles():
    assert game24.solutions((1, 5, 5, 5)) == ["(5 - (1 / 5)) * 5"]  # needs a fraction
    assert game24.solutions((1, 1, 1, 1)) == [] and not game24.solvable((1, 1, 1, 1))
    assert "(10 - 4) * (13 - 9)" in game24.solutions((4, 9, 10, 13))
    assert game24.canonical("(13 - 9) * (10 - 4)") == "(10 - 4) * (13 - 9)"


def test_legal_steps_and_expressions():
    steps = game24.legal_steps([4, 9])
    texts = {s.text() for s in steps}
    assert "9 - 4 = 5 (left: 5)" in texts and "4 / 9 = 4/9 (left: 4/9)" in texts
    assert len(steps) == 5 and all(s.result >= 0 for s in steps)
    assert game24.legal_steps([3]) == []
    assert game24.evaluate_expression("(10 - 4) * (13 - 9)", [4, 9, 10, 13]) == 24
    assert game24.evaluate_expression("10 * 4 - 13 - 9", [4, 9, 10, 13]) == Fraction(18)
    assert game24.evaluate_expression("10 * 4", [4, 9, 10, 13]) is None  # unused numbers
    assert game24.evaluate_expression("(4 / (9 - 9)) + 10 + 13", [4, 9, 10, 13]) is None
    assert game24.evaluate_expression("__import__('os')", [1]) is None
    assert not game24.is_solution("4 * 6", [4, 9, 10, 13])
