"""Tree of Thoughts (Yao et al., 2023) on the Game of 24, with a small LLM as the proposer.

A *thought* is one step ``a op b`` (giving ``c``); a *state* is the multiset of numbers left
after the steps so far. The search repeats, for depth 1 and 2:

1. **propose**: for each kept state the LLM samples ``k`` next steps. Its output is
   *constrained* (:mod:`course_utils.prompting.constrained`) to the legal steps on the
   remaining numbers, so every thought is a valid move — the model only chooses;
2. **value** every new state: the LLM's vote ``sure`` / ``likely`` / ``impossible``
   (constrained to those three words; scores 20 / 1 / 0.001 as in the paper) or the stated
   :func:`heuristic_value` (an exact look-ahead by the program, no model call);
3. **select**: ``"beam"`` keeps the ``breadth`` best states; ``"bfs"`` keeps every state
   not valued ``impossible`` (no breadth limit, so its cost grows as k^depth).

The last step (two numbers left) is checked by the program: a state is solved when one legal
step on its two numbers gives 24. The search therefore makes two rounds of LLM proposals.

Cost is counted in model calls (one sampled step or one value vote = one call), so ToT can
be compared with chain-of-thought sampling at the same budget.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from course_utils import checks
from course_utils.prompting.constrained import constrained_generate, grammar
from course_utils.prompting.game24 import TARGET, Step, fmt, legal_steps, solvable
from course_utils.prompting.llm import CallCounter

VALUE_SCORES = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}
PROPOSE_EXAMPLE = "Input: 2 8 8 14\nPossible next steps:\n14 - 8\n8 / 2\n2 + 8\n14 + 2\n2 * 8"
VALUE_EXAMPLES = [("10 14", "10 + 14 = 24. sure"), ("4 4 10", "(10 - 4) * 4 = 24. sure"),
                  ("11 12", "11 + 12 = 23, 12 - 11 = 1, 11 * 12 = 132. impossible"),
                  ("5 7 8", "(8 - 5) * 7 = 21, 5 + 7 + 8 = 20. likely"),
                  ("1 3 3", "1 * 3 * 3 = 9, (1 + 3) * 3 = 12. impossible")]


@dataclass
class Node:
    """A state: the numbers left, the steps that led here, and its value."""

    numbers: tuple[Fraction, ...]
    steps: tuple[Step, ...] = ()
    value: float = 1.0

    def key(self) -> tuple[Fraction, ...]:
        return self.numbers


@dataclass
class ToTResult:
    """The outcome for one puzzle: ``solved``, the solving ``steps``, and the cost."""

    numbers: tuple[int, ...]
    solved: bool
    steps: list[Step] = field(default_factory=list)
    calls: int = 0
    tokens: int = 0
    proposals: int = 0  # distinct states proposed

    def expression(self) -> str:
        return "; ".join(s.text() for s in self.steps)


def _nums(numbers) -> str:
    return " ".join(fmt(Fraction(x)) for x in numbers)


def propose_messages(numbers) -> list[dict]:
    """The propose prompt: one worked example, then the current numbers."""
    return [{"role": "system", "content": "You play the Game of 24: combine numbers with + - * / to reach 24."},
            {"role": "user", "content": f"{PROPOSE_EXAMPLE}\n\nInput: {_nums(numbers)}\nPossible next steps:"}]


def value_messages(numbers) -> list[dict]:
    """The value prompt: can these numbers still reach 24? (sure / likely / impossible)."""
    shots = "\n".join(f"Numbers: {n}\n{a}" for n, a in VALUE_EXAMPLES)
    return [{"role": "system", "content": "Evaluate if the given numbers can reach 24 with + - * /. "
                                          "Answer sure, likely or impossible."},
            {"role": "user", "content": f"{shots}\nNumbers: {_nums(numbers)}\nCan they reach 24? Answer sure, likely "
                                        "or impossible."}]


def step_prefix(step: Step) -> str:
    """What the proposer writes for a step: ``"14 - 8"`` (the result and the numbers left
    follow from it, so the program fills them in and the model spends no tokens on them)."""
    return f"{fmt(step.a)} {step.op} {fmt(step.b)}"


def step_grammar(numbers) -> str:
    """A grammar whose language is exactly the legal steps on ``numbers``."""
    return grammar(choices=sorted({step_prefix(s) for s in legal_steps(numbers)}))


def parse_step(text: str, numbers) -> Step | None:
    """The legal step written in ``text`` (``"14 - 8"``), or None."""
    for s in legal_steps(numbers):
        if text.strip() == step_prefix(s):
            return s
    return None


def heuristic_value(numbers) -> str:
    """The stated heuristic (no model call): an exact look-ahead by the program. One number:
    ``sure`` if it is 24. Two numbers: ``sure`` if one legal step makes 24. Three or more:
    ``likely`` if the exhaustive search (:func:`course_utils.prompting.game24.solvable`) can
    still reach 24. Otherwise ``impossible``. It is a *perfect* evaluator — the judgement the
    value prompt asks the LLM for — so it isolates how good the LLM's proposals are."""
    nums = [Fraction(x) for x in numbers]
    if len(nums) == 1:
        return "sure" if nums[0] == TARGET else "impossible"
    if len(nums) == 2:
        return "sure" if any(s.result == TARGET for s in legal_steps(nums)) else "impossible"
    return "likely" if solvable(nums) else "impossible"


def finish(node: Node) -> Node | None:
    """The solved child of a two-number state (the program takes the final step), or None."""
    if len(node.numbers) != 2:
        return None
    for s in legal_steps(node.numbers):
        if s.result == TARGET:
            return Node(s.left, node.steps + (s,), VALUE_SCORES["sure"])
    return None


def llm_values(model, tokenizer, states: list[tuple[Fraction, ...]], counter: CallCounter) -> list[str]:
    """The LLM's constrained vote for each state (one greedy call per state)."""
    if not states:
        return []
    out = constrained_generate(model, tokenizer, [value_messages(s) for s in states],
                               grammar(choices=list(VALUE_SCORES)), max_new_tokens=4, batch_size=16,
                               counter=counter)
    return [o[0] if o[0] in VALUE_SCORES else "likely" for o in out]


def llm_proposals(model, tokenizer, states: list[Node], k: int, counter: CallCounter, temperature: float = 1.0
                  ) -> list[list[Step]]:
    """``k`` sampled legal steps for each state (constrained to the legal steps)."""
    outs = constrained_generate(model, tokenizer, [propose_messages(n.numbers) for n in states],
                                [step_grammar(n.numbers) for n in states], max_new_tokens=10,
                                temperature=temperature, n=k, batch_size=max(1, 16 // k), counter=counter)
    return [[s for s in (parse_step(o, n.numbers) for o in texts) if s is not None] for n, texts in zip(states, outs)]


def all_proposals(states: list[Node]) -> list[list[Step]]:
    """Every legal step (exhaustive search; no model): with ``strategy="bfs"`` ToT becomes a
    complete solver, which the tests check against :func:`course_utils.prompting.game24.solvable`."""
    return [legal_steps(n.numbers) for n in states]


def random_proposals(states: list[Node], k: int, rng: random.Random) -> list[list[Step]]:
    """The no-LLM baseline: ``k`` legal steps drawn uniformly (with replacement)."""
    return [[rng.choice(legal_steps(n.numbers)) for _ in range(k)] for n in states]


def tree_of_thoughts(numbers, *, model=None, tokenizer=None, k: int = 4, breadth: int = 2, strategy: str = "beam",
                     value: str = "heuristic", proposer: str = "llm", temperature: float = 1.0,
                     seed: int = 0, value_fn: Callable | None = None) -> ToTResult:
    """Solve one Game-of-24 puzzle with ToT (see the module docstring).

    Args:
        numbers: the four numbers.
        k: proposals sampled per state; breadth: states kept per depth (``"beam"`` only).
        strategy: ``"beam"`` (keep the ``breadth`` best) or ``"bfs"`` (keep all not impossible).
        value: ``"heuristic"`` (:func:`heuristic_value`) or ``"llm"`` (sure/likely/impossible vote).
        proposer: ``"llm"`` (constrained sampling), ``"random"`` (uniform legal steps, no model)
            or ``"all"`` (every legal step, no model).
        value_fn: overrides ``value`` with any ``numbers -> "sure"|"likely"|"impossible"``.
    """
    checks.positive_int(k=k, breadth=breadth)
    checks.one_of("strategy", strategy, ("beam", "bfs"))
    checks.one_of("value", value, ("heuristic", "llm"))
    checks.one_of("proposer", proposer, ("llm", "random", "all"))
    if (proposer == "llm" or (value == "llm" and value_fn is None)) and (model is None or tokenizer is None):
        raise ValueError("proposer='llm' or value='llm' needs model and tokenizer")
    counter = CallCounter()
    rng = random.Random(seed)
    start = tuple(sorted(Fraction(x) for x in numbers))
    frontier = [Node(start)]
    proposed = 0
    for _depth in range(len(start) - 2):
        if proposer == "llm":
            steps = llm_proposals(model, tokenizer, frontier, k, counter, temperature)
        elif proposer == "random":
            steps = random_proposals(frontier, k, rng)
        else:
            steps = all_proposals(frontier)
        children: dict[tuple, Node] = {}
        for node, options in zip(frontier, steps):
            for s in options:
                children.setdefault(s.left, Node(s.left, node.steps + (s,)))
        proposed += len(children)
        kids = list(children.values())
        if value_fn is not None:
            votes = [value_fn(c.numbers) for c in kids]
        elif value == "llm":
            votes = llm_values(model, tokenizer, [c.numbers for c in kids], counter)
        else:
            votes = [heuristic_value(c.numbers) for c in kids]
        for c, v in zip(kids, votes):
            c.value = VALUE_SCORES[v]
        if strategy == "beam":
            frontier = sorted(kids, key=lambda c: -c.value)[:breadth]
        else:
            frontier = [c for c in kids if c.value > VALUE_SCORES["impossible"]] or kids
        if not frontier:
            break
    for node in sorted(frontier, key=lambda c: -c.value):
        done = finish(node)
        if done is not None:
            return ToTResult(tuple(numbers), True, list(done.steps), counter.calls, counter.tokens, proposed)
    return ToTResult(tuple(numbers), False, [], counter.calls, counter.tokens, proposed)


# ---------------------------------------------------------------- baselines: IO and CoT prompting

IO_EXAMPLE = ("Use numbers and basic arithmetic operations (+ - * /) to obtain 24.\nInput: 4 4 6 8\n"
              "Answer: (4 + 8) * (6 - 4) = 24")
COT_EXAMPLE = ("Use numbers and basic arithmetic operations (+ - * /) to obtain 24. Each step, you are only allowed "
               "to choose two of the remaining numbers to obtain a new number.\nInput: 4 4 6 8\nSteps:\n"
               "4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 12)\n2 * 12 = 24 (left: 24)\n"
               "Answer: (6 - 4) * (4 + 8) = 24")


def game24_messages(numbers, style: str = "cot") -> list[dict]:
    """Input-output (``"io"``) or chain-of-thought (``"cot"``) prompt with one worked example."""
    checks.one_of("style", style, ("io", "cot"))
    example = IO_EXAMPLE if style == "io" else COT_EXAMPLE
    return [{"role": "user", "content": f"{example}\n\nInput: {_nums(numbers)}\n"
                                        + ("Answer:" if style == "io" else "Steps:")}]


def answer_expression(text: str) -> str:
    """The expression after the last ``Answer:`` (up to ``=``), else the last line up to ``=``."""
    found = re.findall(r"answer\s*:\s*([^\n=]+)", text, flags=re.IGNORECASE)
    candidate = found[-1] if found else (text.strip().splitlines() or [""])[-1].split("=")[0]
    return candidate.strip()
