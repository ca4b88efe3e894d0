"""The course's alignment datasets and their rule-based judge.

The data (made by ``scripts/make_alignment_data.py``, documented in
``course_utils/data/alignment/README.md``) are unit conversions and two-number arithmetic
whose answer is one integer, so a program can grade any response exactly:

* **correct**: the first integer in the response equals the answer (lenient: words allowed);
* **formatted**: the response is the bare integer and nothing else;
* **strict**: both — the property the chosen responses of the preference set have.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from course_utils import checks

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "alignment"
SYSTEM_PROMPT = "You are a precise assistant. Answer with the bare number and nothing else."
SPLITS = ("train", "heldout")
_INT = re.compile(r"-?\d[\d,]*")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate with `python scripts/make_alignment_data.py`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_sft(split: str = "train", chat: bool = False) -> list[dict]:
    """Instruction pairs: Alpaca rows (``instruction``, ``input``, ``output``, ``task``, ``answer``),
    or with ``chat=True`` rows with ``messages`` (system, user, assistant)."""
    checks.one_of("split", split, SPLITS)
    return _read_jsonl(DATA_DIR / f"sft_{split}{'_chat' if chat else ''}.jsonl")


def load_preferences(split: str = "train", chat: bool = False) -> list[dict]:
    """Preference pairs: ``prompt``, ``chosen``, ``rejected`` strings (plus ``answer``), or with
    ``chat=True`` TRL's conversational form (lists of messages)."""
    checks.one_of("split", split, SPLITS)
    return _read_jsonl(DATA_DIR / f"pref_{split}{'_chat' if chat else ''}.jsonl")


def prompt_text(row: dict) -> str:
    """The user turn of an Alpaca row: instruction, a blank line, the input."""
    for key in ("instruction", "input"):
        if key not in row:
            raise ValueError(f"row must be an Alpaca row with {key!r}; got keys {sorted(row)}")
    return f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]


def extract_integer(text: str) -> int | None:
    """The first integer in ``text`` (``"1,000"`` counts as 1000), or None."""
    checks.string("text", text)
    match = _INT.search(text)
    return int(match.group().replace(",", "")) if match else None


def judge(response: str, answer: int) -> dict[str, bool]:
    """Grade one response against the integer ``answer``: ``correct``, ``formatted``, ``strict``."""
    checks.integer("answer", answer)
    value = extract_integer(response)
    formatted = re.fullmatch(r"-?\d+", response.strip()) is not None
    correct = value == answer
    return {"correct": correct, "formatted": formatted, "strict": correct and formatted}


def score_responses(responses: list[str], answers: list[int]) -> dict[str, float]:
    """Mean of each judge field over a list of responses."""
    checks.same_length(responses=responses, answers=answers)
    checks.non_empty("responses", responses)
    grades = [judge(r, a) for r, a in zip(responses, answers)]
    return {k: sum(g[k] for g in grades) / len(grades) for k in ("correct", "formatted", "strict")}


def win_rate(responses_a: list[str], responses_b: list[str], answers: list[int]) -> dict[str, float]:
    """Rule-judged head-to-head of A against B: a response beats the other when its
    ``(strict, correct, formatted)`` grade is higher; ties count half.
    Returns ``win_rate`` (= (wins + ties / 2) / n), ``wins``, ``ties``, ``losses``."""
    checks.same_length(responses_a=responses_a, responses_b=responses_b, answers=answers)
    checks.non_empty("answers", answers)
    wins = ties = losses = 0
    for ra, rb, ans in zip(responses_a, responses_b, answers):
        ga, gb = judge(ra, ans), judge(rb, ans)
        ka = (ga["strict"], ga["correct"], ga["formatted"])
        kb = (gb["strict"], gb["correct"], gb["formatted"])
        wins += ka > kb
        ties += ka == kb
        losses += ka < kb
    n = len(answers)
    return {"win_rate": (wins + ties / 2) / n, "wins": wins, "ties": ties, "losses": losses}
