"""Generate the course's checkable reasoning tasks (chapter 07) into course_utils/data/prompting/.

Deterministic (seeded): running it again writes byte-identical files, which
``tests/unit/test_prompting.py`` checks. Every item has a known answer, so any model output
can be graded by a program.

Files written (JSON lines):

* ``reasoning_train.jsonl`` / ``reasoning_heldout.jsonl``: multi-step problems with an
  integer ``answer`` and a step-by-step ``rationale`` ending in ``The answer is N.``

  - ``kind="arithmetic"``: word problems with 1, 2 or 3 operations (``steps``) on one
    quantity (buy, give away, multiply, share equally), small numbers;
  - ``kind="units"``: unit-conversion chains of 1, 2 or 3 conversions (km → m → cm → mm,
    weeks → days → hours → minutes → seconds, tonnes → kg → g, dollars → cents).

  Held-out items never share their numbers with a training item: the key of an arithmetic
  item is its start value and its (operation, operand) sequence, of a conversion its units and
  start value.
* ``game24_train.jsonl`` / ``game24_heldout.jsonl``: every multiset of four numbers in 1–13
  (1820 puzzles), each with ``solvable`` and the full sorted list of its ``solutions``
  (canonical expressions, :func:`course_utils.prompting.game24.solutions`). The held-out split
  is 100 solvable and 50 unsolvable puzzles drawn with the seed; the rest is train.

Usage: ``python scripts/make_prompting_data.py [--out DIR] [--seed 0]`` (about a minute: the
Game-of-24 enumeration is exhaustive).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils.prompting.game24 import all_puzzles, solutions  # noqa: E402

NAMES = [("Tom", "he", "his"), ("Ana", "she", "her"), ("Ravi", "he", "his"), ("Mia", "she", "her"),
         ("Leo", "he", "his"), ("Zoe", "she", "her"), ("Sam", "he", "his"), ("Ivy", "she", "her")]
OBJECTS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cookies", "stamps", "cards", "shells"]
OPS = {  # op → sentence templates ({P}: pronoun capitalised, {n}: the operand, {o}: the object)
    "+": ["{P} buys {n} more {o}.", "{P} finds {n} more {o}.", "A friend gives {p2} {n} more {o}."],
    "-": ["{P} gives {n} {o} to a friend.", "{P} loses {n} {o}.", "{P} uses {n} of the {o}."],
    "*": ["Then the number of {o} becomes {n} times as large.", "{P} ends up with {n} times as many {o}."],
    "/": ["{P} splits the {o} into {n} equal groups and keeps one group.",
          "{P} shares the {o} equally among {n} friends, keeping one share."],
}
OP_WORDS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}
LADDERS = [  # consecutive conversions: (unit, factor to the next unit, next unit)
    [("km", 1000, "m"), ("m", 100, "cm"), ("cm", 10, "mm")],
    [("weeks", 7, "days"), ("days", 24, "hours"), ("hours", 60, "minutes"), ("minutes", 60, "seconds")],
    [("tonnes", 1000, "kg"), ("kg", 1000, "g")],
    [("dollars", 100, "cents")],
    [("gigabytes", 1000, "megabytes"), ("megabytes", 1000, "kilobytes"), ("kilobytes", 1000, "bytes")],
]
SINGULAR = {"weeks": "week", "days": "day", "hours": "hour", "minutes": "minute", "tonnes": "tonne",
            "dollars": "dollar", "gigabytes": "gigabyte", "megabytes": "megabyte", "kilobytes": "kilobyte"}
UNIT_QUESTIONS = ["How many {to} are there in {x} {frm}?", "Convert {x} {frm} to {to}.",
                  "A quantity measures {x} {frm}. What is it in {to}?"]
N_TRAIN_PER_LEVEL, N_HELDOUT_PER_LEVEL = 150, 50   # per kind and number of steps
N_24_HELDOUT_SOLVABLE, N_24_HELDOUT_UNSOLVABLE = 100, 50


def arithmetic_item(rng: random.Random, steps: int) -> dict:
    """A word problem of ``steps`` operations on one quantity, its answer and rationale."""
    name, pron, poss = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    value = rng.randint(2, 20)
    sentences = [f"{name} has {value} {obj}."]
    lines = [f"{name} starts with {value} {obj}."]
    key = [value]
    for _ in range(steps):
        ops = ["+", "-"] if value > 1 else ["+"]
        if value <= 30:
            ops.append("*")
        divisors = [d for d in (2, 3, 4, 5) if value % d == 0 and value >= 2 * d]
        if divisors:
            ops.append("/")
        op = rng.choice(ops)
        if op == "+":
            n = rng.randint(2, 20)
            new = value + n
        elif op == "-":
            n = rng.randint(1, value - 1)
            new = value - n
        elif op == "*":
            n = rng.randint(2, 4)
            new = value * n
        else:
            n = rng.choice(divisors)
            new = value // n
        template = rng.choice(OPS[op])
        sentences.append(template.format(P=pron.capitalize(), p2="him" if pron == "he" else "her", n=n, o=obj))
        lines.append(f"{value} {op} {n} = {new}")
        key += [op, n]
        value = new
    question = " ".join(sentences) + f" How many {obj} does {name} have now?"
    lines.append(f"The answer is {value}.")
    return {"kind": "arithmetic", "steps": steps, "question": question, "answer": value,
            "rationale": "\n".join(lines), "key": ["arithmetic", *key]}


def units_item(rng: random.Random, steps: int) -> dict:
    """A conversion chain of ``steps`` consecutive conversions, its answer and rationale."""
    ladders = [ladder for ladder in LADDERS if len(ladder) >= steps]
    ladder = rng.choice(ladders)
    start = rng.randint(0, len(ladder) - steps)
    chain = ladder[start:start + steps]
    x = rng.randint(2, 60)
    frm, to = chain[0][0], chain[-1][2]
    question = rng.choice(UNIT_QUESTIONS).format(x=x, frm=frm, to=to)
    lines, value = [], x
    for unit, factor, nxt in chain:
        new = value * factor
        lines.append(f"1 {SINGULAR.get(unit, unit)} = {factor} {nxt}, so {value} {unit} = {value} * {factor} = {new} {nxt}")
        value = new
    lines.append(f"The answer is {value}.")
    return {"kind": "units", "steps": steps, "question": question, "answer": value,
            "rationale": "\n".join(lines), "key": ["units", frm, to, x]}


def reasoning_split(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Held-out first (their keys are then excluded from training), per kind and level."""
    heldout, train, seen = [], [], set()
    for make in (arithmetic_item, units_item):
        for steps in (1, 2, 3):
            for bucket, size in ((heldout, N_HELDOUT_PER_LEVEL), (train, N_TRAIN_PER_LEVEL)):
                made, tries = 0, 0
                while made < size and tries < 100 * size:
                    tries += 1
                    item = make(rng, steps)
                    key = json.dumps(item["key"])
                    if key in seen:
                        continue
                    seen.add(key)
                    bucket.append(item)
                    made += 1
    for split, rows in (("heldout", heldout), ("train", train)):
        rng.shuffle(rows)
        for i, row in enumerate(rows):
            row["id"] = f"{split}-{i:04d}"
            del row["key"]
    return train, heldout


def game24_heldout_keys(flags: dict[tuple[int, ...], bool], rng: random.Random) -> list[tuple[int, ...]]:
    """The held-out puzzles (in file order), from the solvable flag of every puzzle."""
    solvable = [k for k, v in flags.items() if v]
    unsolvable = [k for k, v in flags.items() if not v]
    held = rng.sample(solvable, N_24_HELDOUT_SOLVABLE) + rng.sample(unsolvable, N_24_HELDOUT_UNSOLVABLE)
    rng.shuffle(held)
    return held


def game24_split(rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = {}
    for numbers in all_puzzles():
        sols = solutions(numbers)
        rows[numbers] = {"numbers": list(numbers), "solvable": bool(sols), "n_solutions": len(sols), "solutions": sols}
    held = game24_heldout_keys({k: r["solvable"] for k, r in rows.items()}, rng)
    train = [r for k, r in rows.items() if k not in set(held)]
    return train, [rows[k] for k in held]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "course_utils" / "data" / "prompting"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-game24", action="store_true", help="only the reasoning files (fast)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = reasoning_split(random.Random(args.seed))
    write_jsonl(out / "reasoning_train.jsonl", train)
    write_jsonl(out / "reasoning_heldout.jsonl", heldout)
    print(f"reasoning: {len(train)} train, {len(heldout)} held-out")
    if not args.skip_game24:
        g_train, g_held = game24_split(random.Random(args.seed + 1))
        write_jsonl(out / "game24_train.jsonl", g_train)
        write_jsonl(out / "game24_heldout.jsonl", g_held)
        print(f"game24: {len(g_train)} train, {len(g_held)} held-out "
              f"({sum(r['solvable'] for r in g_held)} solvable)")


if __name__ == "__main__":
    main()
