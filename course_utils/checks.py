"""Argument checks shared by every chapter, so that the code a notebook displays is the math plus
one line per check.

Each check raises ``ValueError`` (a bad value) or ``TypeError`` (a wrong kind of object) with a
message that names the argument and says what was expected, and returns nothing. Checks that take
keyword arguments check each of them::

    checks.positive_int(d_model=d_model, num_heads=num_heads)
    checks.tensor("x", x, ndim=3, floating=True)

``ValueError`` means the argument has the right kind but a bad value; the checks that say "type"
in their docstring (:func:`integer`, :func:`real`, :func:`string`, :func:`instance`, a non-tensor
passed to :func:`tensor`) raise ``TypeError`` for a wrong kind of object.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(**values: Any) -> None:
    """Each value is an int ≥ 1 (bools are rejected)."""
    for name, value in values.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def non_negative_int(**values: Any) -> None:
    """Each value is an int ≥ 0 (bools are rejected)."""
    for name, value in values.items():
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _in_range(name: str, value: Any, low: float | None, high: float | None, low_open: bool,
              high_open: bool) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            wanted = f"{'>' if low_open else '>='} {low}"
        elif low is None:
            wanted = f"{'<' if high_open else '<='} {high}"
        else:
            wanted = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> None:
    """``value`` is a finite real number in the interval given by ``low``/``high``
    (closed unless ``low_open``/``high_open``). Anything else is a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    _in_range(name, value, low, high, low_open, high_open)


def real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> None:
    """Like :func:`number`, but a value that is not a real number at all (a string, ``None``, a
    bool) is a ``TypeError``; a non-finite or out-of-range one a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    _in_range(name, value, low, high, low_open, high_open)


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> None:
    """``value`` is an int (``TypeError`` otherwise; bools are rejected) in ``[low, high]``
    (``ValueError`` otherwise)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    _in_range(name, value, low, high, False, False)


def positive_number(**values: Any) -> None:
    """Each value is a finite number > 0."""
    for name, value in values.items():
        number(name, value, low=0, low_open=True)


def probability(name: str, value: Any, *, allow_zero: bool = True, allow_one: bool = True) -> None:
    """``value`` is a probability in [0, 1] (ends excluded on request)."""
    number(name, value, low=0.0, high=1.0, low_open=not allow_zero, high_open=not allow_one)


def divisible(name: str, value: int, divisor: int, *, divisor_name: str | None = None, why: str = "") -> None:
    """``value`` is a multiple of ``divisor`` (``divisor_name`` names it in the message)."""
    if value % divisor:
        by = f"{divisor_name}={divisor}" if divisor_name else str(divisor)
        raise ValueError(f"{name}={value} must be divisible by {by}" + (f" ({why})" if why else ""))


def one_of(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` is one of ``choices``."""
    options = list(choices)
    if value not in options:
        raise ValueError(f"{name}={value!r}: expected one of {options}")


def instance(name: str, value: Any, types: type | tuple[type, ...]) -> None:
    """``value`` is an instance of ``types`` (``TypeError`` otherwise)."""
    if not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise TypeError(f"{name} must be a {wanted}, got {type(value).__name__}")


def non_empty(name: str, value: Any) -> None:
    """``value`` has at least one element (a tensor or array: ``numel() > 0`` / ``size > 0``)."""
    shape = getattr(value, "shape", None)
    size = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", None)
    if not isinstance(size, int):
        size = len(value)
    if size == 0:
        raise ValueError(f"{name} must not be empty" + (f", got shape {tuple(shape)}" if shape is not None else ""))


def string(name: str, value: Any, *, non_empty: bool = False) -> None:
    """``value`` is a ``str`` (``TypeError`` otherwise), not empty when ``non_empty``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if non_empty and not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


def same_length(**sequences: Any) -> None:
    """All the sequences have the same length."""
    lengths = {name: len(seq) for name, seq in sequences.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} ({n})" for name, n in lengths.items())
        raise ValueError(f"{listed} must have the same length")


def tensor(name: str, x: Any, *, ndim: int | tuple[int, ...] | None = None, floating: bool | None = None,
           integer: bool = False, shape: str | None = None, last_dim: int | None = None) -> None:
    """``x`` is a ``torch.Tensor`` with ``ndim`` dimensions (an int or a tuple of allowed counts),
    ``last_dim`` entries in its last dimension and, when ``floating`` is set, a floating (or, when
    False, a non-floating) dtype; ``integer=True`` asks for an integer dtype (not bool, not
    complex), as token ids need. ``shape`` is the expected layout in words, e.g.
    ``"(batch, seq, dim)"``, quoted in the error."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            layout = f" {shape}" if shape else ""
            dims = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must have {dims} dimensions{layout}, got shape {tuple(x.shape)}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        layout = shape or f"(..., {last_dim})"
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")
    if floating is not None and x.is_floating_point() != floating:
        kind = "a floating" if floating else "an integer or bool"
        raise TypeError(f"{name} must have {kind} dtype, got {x.dtype}")
    if integer and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")


def same_shape(**tensors: Any) -> None:
    """All the arguments are tensors (``TypeError`` naming one that is not) of the same shape."""
    import torch

    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected the same shape, got {listed}")
