"""The Game of 24: the rules, the legal steps, and an exhaustive solver.

Four numbers (1–13) must be combined with ``+ − × ÷`` into 24, each number used once. A
*step* takes two of the remaining numbers ``a, b`` and replaces them by ``a op b``; after three
steps one number is left, and the puzzle is solved when it is 24. Arithmetic is exact
(:class:`fractions.Fraction`), so ``5 × (5 − 1 ÷ 5) = 24`` counts.

The course's step rules (the same for the solver, the Tree-of-Thoughts proposer and the
grader): subtraction is written larger-minus-smaller (no negative intermediate), division
needs a non-zero divisor. A *solution* is an expression tree; trees that differ only by the
order of the operands of ``+`` and ``×`` are the same solution (:func:`canonical`).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

TARGET = 24
OPS = ("+", "-", "*", "/")


def fmt(x: Fraction) -> str:
    """``7`` for an integer, ``7/3`` for a fraction."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def parse_number(text: str) -> Fraction:
    """Inverse of :func:`fmt`: ``"7"`` → 7, ``"7/3"`` → 7/3."""
    return Fraction(text.strip())


@dataclass(frozen=True)
class Step:
    """``a op b = result``; ``left`` is the multiset of numbers remaining after the step."""

    a: Fraction
    op: str
    b: Fraction
    result: Fraction
    left: tuple[Fraction, ...]

    def text(self) -> str:
        """The step as the proposer writes it: ``"4 + 9 = 13 (left: 10 13)"``."""
        return f"{fmt(self.a)} {self.op} {fmt(self.b)} = {fmt(self.result)} (left: {' '.join(fmt(x) for x in self.left)})"


def _sorted(numbers) -> tuple[Fraction, ...]:
    return tuple(sorted(Fraction(x) for x in numbers))


def legal_steps(numbers: Sequence) -> list[Step]:
    """Every legal step on ``numbers`` (duplicates removed): for each pair ``a ≥ b`` of the
    remaining numbers, ``a + b``, ``a − b``, ``a × b``, ``a ÷ b`` (b ≠ 0) and ``b ÷ a`` (a ≠ 0)."""
    nums = _sorted(numbers)
    if len(nums) < 2:
        return []
    seen: set[tuple] = set()
    out = []
    for i, j in itertools.combinations(range(len(nums)), 2):
        b, a = nums[i], nums[j]  # sorted, so a >= b
        rest = nums[:i] + nums[i + 1:j] + nums[j + 1:]
        candidates = [(a, "+", b, a + b), (a, "-", b, a - b), (a, "*", b, a * b)]
        if b != 0:
            candidates.append((a, "/", b, a / b))
        if a != 0 and a != b:
            candidates.append((b, "/", a, b / a))
        for x, op, y, r in candidates:
            left = _sorted(rest + (r,))
            key = (x, op, y, left)
            if key not in seen:
                seen.add(key)
                out.append(Step(x, op, y, r, left))
    return out


def _combine(op: str, x: str, y: str) -> str:
    if op in "+*":  # commutative: order the operands so that a+b and b+a are one solution
        x, y = sorted((x, y))
    return f"({x} {op} {y})"


@cache
def _expressions(nums: tuple[Fraction, ...]) -> frozenset[tuple[Fraction, str]]:
    """All (value, canonical expression) reachable from the multiset ``nums`` by legal steps,
    combining the expressions of sub-results."""
    if len(nums) == 1:
        return frozenset({(nums[0], fmt(nums[0]))})
    out: set[tuple[Fraction, str]] = set()
    n = len(nums)
    # split the multiset into two non-empty parts; every expression tree's root splits it so
    for mask in range(1, 2 ** n - 1):
        left = tuple(nums[i] for i in range(n) if mask >> i & 1)
        right = tuple(nums[i] for i in range(n) if not mask >> i & 1)
        for va, ea in _expressions(left):
            for vb, eb in _expressions(right):
                if va >= vb:  # the other split orders the pair the other way round
                    out.add((va + vb, _combine("+", ea, eb)))
                    out.add((va - vb, f"({ea} - {eb})"))
                    out.add((va * vb, _combine("*", ea, eb)))
                if vb != 0:
                    out.add((va / vb, f"({ea} / {eb})"))
    return frozenset(out)


def canonical(expression: str) -> str:
    """The canonical form of a solution expression (operands of ``+``/``×`` sorted, no outer
    parentheses), as listed by :func:`solutions`."""
    return _strip(_canonical(ast.parse(expression, mode="eval").body))


def _strip(expression: str) -> str:
    return expression[1:-1] if expression.startswith("(") and expression.endswith(")") else expression


def _canonical(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        return fmt(Fraction(node.value))
    if isinstance(node, ast.BinOp):
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(node.op)]
        return _combine(op, _canonical(node.left), _canonical(node.right))
    raise ValueError(f"not an arithmetic expression: {ast.dump(node)}")


def solutions(numbers: Sequence[int], target: int = TARGET) -> list[str]:
    """Every solution of the puzzle as a canonical expression string, sorted (empty when the
    puzzle is unsolvable). Exhaustive: it combines every split of the numbers recursively."""
    nums = _sorted(numbers)
    if len(nums) == 0:
        raise ValueError("numbers must not be empty")
    return sorted({_strip(e) for v, e in _expressions(nums) if v == target})


def solvable(numbers: Sequence[int], target: int = TARGET) -> bool:
    """True when some sequence of legal steps turns ``numbers`` into ``target`` (a plain
    depth-first search over :func:`legal_steps`, independent of :func:`solutions`)."""
    return _dfs(_sorted(numbers), Fraction(target))


@cache
def _dfs(nums: tuple[Fraction, ...], target: Fraction) -> bool:
    if len(nums) == 1:
        return nums[0] == target
    return any(_dfs(s.left, target) for s in legal_steps(nums))


def evaluate_expression(expression: str, numbers: Sequence[int]) -> Fraction | None:
    """The exact value of ``expression`` if it uses exactly the multiset ``numbers`` (each
    once) and only ``+ − × ÷`` and parentheses; None otherwise (a wrong number, a missing
    one, division by zero, anything else)."""
    try:
        tree = ast.parse(expression.replace("×", "*").replace("÷", "/").replace("−", "-"), mode="eval").body
    except SyntaxError:
        return None
    used: list[Fraction] = []

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            used.append(Fraction(node.value))
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            x, y = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return x + y
            if isinstance(node.op, ast.Sub):
                return x - y
            if isinstance(node.op, ast.Mult):
                return x * y
            if y == 0:
                raise ZeroDivisionError
            return x / y
        raise ValueError("unsupported")

    try:
        value = ev(tree)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None
    return value if sorted(used) == sorted(Fraction(x) for x in numbers) else None


def is_solution(expression: str, numbers: Sequence[int], target: int = TARGET) -> bool:
    """True when ``expression`` uses each of ``numbers`` once and equals ``target``."""
    return evaluate_expression(expression, numbers) == target


def all_puzzles(low: int = 1, high: int = 13) -> list[tuple[int, int, int, int]]:
    """Every multiset of four numbers in ``[low, high]`` (1820 puzzles for 1–13)."""
    return list(itertools.combinations_with_replacement(range(low, high + 1), 4))
