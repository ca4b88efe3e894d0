"""A safe calculator: arithmetic parsed with Python's ``ast`` and evaluated node by node.

It never calls ``eval``. The expression is parsed (``ast.parse(text, mode="eval")``) and walked;
only these nodes are evaluated, anything else is rejected with a :class:`CalculatorError`:

* numbers (``int``, ``float``; not ``True``/``False``), the names ``pi`` and ``e``;
* ``+ - * / // % **`` and unary ``+ -``; ``^`` is read as a power, as on a calculator;
* calls of ``sqrt abs round min max`` (by name: no attribute access, no keyword arguments).

Bounds keep a tool call cheap whatever the model writes: at most :data:`MAX_LENGTH` characters,
and a power ``a ** b`` only when ``|b| ≤ 100`` and ``|a ** b| ≤ 10^100`` (checked with logarithms,
*before* computing it), so ``9 ** 9 ** 9`` or ``10 ** 1000`` cost nothing. Division by zero,
``sqrt`` of a negative number and float overflow become errors too. The error message is what the
agent sees as its observation, so it says what is wrong.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_LENGTH = 200
MAX_EXPONENT = 100
MAX_LOG10 = 100  # |a ** b| <= 10 ** MAX_LOG10

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max}
CONSTANTS = {"pi": math.pi, "e": math.e}


class CalculatorError(ValueError):
    """The expression is not allowed or cannot be computed (the message says why)."""


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent} is too large (at most {MAX_EXPONENT})")
    if base != 0 and exponent * math.log10(abs(base)) > MAX_LOG10:
        raise CalculatorError(f"{base} ** {exponent} is too large (more than 10**{MAX_LOG10})")
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero (0 to a negative power)")
    result = base ** exponent
    if isinstance(result, complex):
        raise CalculatorError(f"{base} ** {exponent} is not a real number")
    return result


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculatorError(f"{node.value!r} is not a number")
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise CalculatorError(f"unknown name {node.id!r} (allowed: {', '.join(CONSTANTS)})")
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculatorError("division by zero")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            raise CalculatorError(f"only these functions are allowed: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise CalculatorError(f"{name}() takes no keyword arguments")
        args = [_evaluate(a) for a in node.args]
        if name == "sqrt" and args and args[0] < 0:
            raise CalculatorError("sqrt of a negative number")
        if name == "round" and len(args) == 2 and not isinstance(args[1], int):
            raise CalculatorError("round(x, n) needs a whole number n")
        try:
            return FUNCTIONS[name](*args)
        except TypeError as err:
            raise CalculatorError(f"bad arguments for {name}(): {err}") from None
    raise CalculatorError(f"{type(node).__name__} is not allowed in a calculator expression")


def calculate(expression: str) -> int | float:
    """The value of an arithmetic ``expression``; raises :class:`CalculatorError` (a ``ValueError``)
    for anything that is not plain arithmetic or that is too large to compute."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression is too long ({len(expression)} characters, at most {MAX_LENGTH})")
    text = expression.strip().replace("^", "**")
    if not text:
        raise CalculatorError("expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"{expression!r} is not a valid arithmetic expression") from None
    try:
        result = _evaluate(tree)
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise CalculatorError("the result is not a finite number")
    return result


def format_number(value: int | float, digits: int = 4) -> str:
    """A number as an agent reads it: ints as they are, floats rounded to ``digits`` decimals without
    trailing zeros (``72.32``, ``24``, ``0.0012``)."""
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else f"{value:.{digits}g}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / ** and parentheses, sqrt, round, abs, min, max.

    Args:
        expression: the expression to compute, e.g. "22.4 * 9 / 5 + 32".
    """
    return format_number(calculate(expression))


def calculator_tool():
    """The ``calculator`` tool (its schema read from :func:`calculator`'s signature and docstring)."""
    from course_utils.agents.tools import Tool

    return Tool.from_function(calculator)
