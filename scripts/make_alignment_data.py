"""Generate the course's alignment datasets (deterministic, seeded) into course_utils/data/alignment/.

Domain: unit conversions and two-number arithmetic with an integer answer, so that every
response can be checked exactly by a program (:func:`course_utils.alignment.data.judge`).

Files written (JSON lines):

* ``sft_train.jsonl`` / ``sft_heldout.jsonl``: Alpaca format ``instruction``, ``input``,
  ``output`` plus ``task`` and ``answer`` (the integer, for the judge).
* ``sft_train_chat.jsonl`` / ``sft_heldout_chat.jsonl``: the same pairs as chat ``messages``.
* ``pref_train.jsonl`` / ``pref_heldout.jsonl``: ``prompt``, ``chosen``, ``rejected`` (strings)
  plus ``answer`` and ``rejected_kind``; the chosen response is correct and the bare number,
  the rejected one is wrong and/or not in the required format.
* ``pref_train_chat.jsonl`` / ``pref_heldout_chat.jsonl``: TRL's conversational preference form.

Held-out items use (task, numbers) combinations that never occur in the training files.

Usage: ``python scripts/make_alignment_data.py [--out DIR] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CONVERSIONS = [  # (from unit, to unit, factor)
    ("km", "m", 1000), ("m", "cm", 100), ("cm", "mm", 10), ("kg", "g", 1000),
    ("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
]
INSTRUCTIONS = {
    "convert": [
        "Convert the quantity to the requested unit. Reply with the number only.",
        "Give the converted value as a whole number, with no units or words.",
        "Unit conversion: answer with just the number.",
    ],
    "add": [
        "Add the two numbers. Reply with the number only.",
        "Compute the sum and answer with just the number.",
    ],
    "subtract": [
        "Subtract the second number from the first. Reply with the number only.",
        "Compute the difference and answer with just the number.",
    ],
}
SYSTEM = "You are a precise assistant. Answer with the bare number and nothing else."
N_SFT_TRAIN, N_SFT_HELDOUT = 2000, 400
N_PREF_TRAIN, N_PREF_HELDOUT = 1000, 200


def make_item(rng: random.Random) -> dict:
    """One random task with its integer answer."""
    task = rng.choices(["convert", "add", "subtract"], weights=[0.5, 0.25, 0.25])[0]
    if task == "convert":
        src, dst, factor = rng.choice(CONVERSIONS)
        x = rng.randint(2, 199)
        key = (task, src, x)
        inp, answer = f"{x} {src} to {dst}", x * factor
    elif task == "add":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        key, inp, answer = (task, a, b), f"{a} + {b}", a + b
    else:
        a = rng.randint(20, 99)
        b = rng.randint(1, a - 1)
        key, inp, answer = (task, a, b), f"{a} - {b}", a - b
    return {"key": key, "task": task, "instruction": rng.choice(INSTRUCTIONS[task]), "input": inp,
            "output": str(answer), "answer": answer}


def prompt_text(item: dict) -> str:
    """The user turn: instruction, a blank line, then the input (Alpaca's layout)."""
    return f"{item['instruction']}\n\n{item['input']}"


def wrong_answer(item: dict, rng: random.Random) -> int:
    """A plausible mistake: off by a little, or a wrong conversion factor."""
    answer = item["answer"]
    if item["task"] == "convert" and rng.random() < 0.5:
        x = int(item["input"].split()[0])
        factors = [f for _, _, f in CONVERSIONS if f != answer // x]
        wrong = x * rng.choice(factors)
    else:
        wrong = answer + rng.choice([-11, -10, -2, -1, 1, 2, 10, 11])
    return wrong if wrong != answer else answer + 1


def verbose(item: dict, value: int, rng: random.Random) -> str:
    unit = item["input"].split()[-1] if item["task"] == "convert" else ""
    templates = [f"The answer is {value} {unit}.", f"Sure! {item['input']} is {value} {unit}.",
                 f"{value} {unit}, I think."]
    return " ".join(rng.choice(templates).split()).replace(" .", ".").replace(" ,", ",")


def make_preference(item: dict, rng: random.Random) -> dict:
    kind = rng.choices(["wrong_value", "verbose", "wrong_and_verbose"], weights=[0.5, 0.25, 0.25])[0]
    if kind == "wrong_value":
        rejected = str(wrong_answer(item, rng))
    elif kind == "verbose":
        rejected = verbose(item, item["answer"], rng)
    else:
        rejected = verbose(item, wrong_answer(item, rng), rng)
    return {"prompt": prompt_text(item), "chosen": item["output"], "rejected": rejected,
            "answer": item["answer"], "task": item["task"], "rejected_kind": kind}


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """All splits, deterministic for a seed. Held-out keys never appear in training files."""
    rng = random.Random(seed)
    seen: set = set()

    def unique_items(n: int) -> list[dict]:
        out = []
        while len(out) < n:
            item = make_item(rng)
            if item["key"] not in seen:
                seen.add(item["key"])
                out.append(item)
        return out

    heldout = unique_items(N_SFT_HELDOUT + N_PREF_HELDOUT)
    train = unique_items(N_SFT_TRAIN + N_PREF_TRAIN)
    sft_heldout, pref_heldout_items = heldout[:N_SFT_HELDOUT], heldout[N_SFT_HELDOUT:]
    sft_train, pref_train_items = train[:N_SFT_TRAIN], train[N_SFT_TRAIN:]
    strip = lambda it: {k: it[k] for k in ("instruction", "input", "output", "task", "answer")}  # noqa: E731
    return {
        "sft_train": [strip(it) for it in sft_train],
        "sft_heldout": [strip(it) for it in sft_heldout],
        "pref_train": [make_preference(it, rng) for it in pref_train_items],
        "pref_heldout": [make_preference(it, rng) for it in pref_heldout_items],
    }


def to_chat_sft(row: dict) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": prompt_text(row)},
                         {"role": "assistant", "content": row["output"]}],
            "answer": row["answer"], "task": row["task"]}


def to_chat_pref(row: dict) -> dict:
    return {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
            "answer": row["answer"], "task": row["task"]}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    default_out = Path(__file__).resolve().parents[1] / "course_utils" / "data" / "alignment"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    splits = generate(args.seed)
    for name, rows in splits.items():
        write_jsonl(args.out / f"{name}.jsonl", rows)
        chat = [to_chat_sft(r) for r in rows] if name.startswith("sft") else [to_chat_pref(r) for r in rows]
        write_jsonl(args.out / f"{name}_chat.jsonl", chat)
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
