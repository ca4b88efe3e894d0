"""course_utils.checks: each check names the argument and says what was expected."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_utils import checks


def test_ints():
    checks.positive_int(a=1, b=np.int64(3))
    checks.non_negative_int(a=0)
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match="num_heads must be a positive int"):
            checks.positive_int(d=4, num_heads=bad)
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        checks.non_negative_int(steps=-1)
    checks.integer("top_k", 3, low=1, high=3)
    with pytest.raises(TypeError, match="top_k must be an integer"):
        checks.integer("top_k", 2.5)
    with pytest.raises(TypeError, match="top_k"):
        checks.integer("top_k", True)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 3\], got 4"):
        checks.integer("top_k", 4, low=1, high=3)
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        checks.integer("top_k", 0, low=1)


def test_numbers():
    checks.number("p", 0.5, low=0, high=1)
    checks.positive_number(beta=0.1, eps=1)
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        checks.positive_number(beta=0)
    for bad in ("0.1", None, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="beta must be a finite number"):
            checks.number("beta", bad)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\), got 0.5"):
        checks.number("label_smoothing", 0.5, low=0, high=0.5, high_open=True)
    with pytest.raises(ValueError, match="x must be <= 2"):
        checks.number("x", 3, high=2)
    checks.real("top_p", 1.0, low=0, high=1, low_open=True)
    with pytest.raises(TypeError, match="top_p must be a real number"):
        checks.real("top_p", "0.9")
    with pytest.raises(ValueError, match="top_p must be finite"):
        checks.real("top_p", math.nan)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        checks.real("top_p", 0.0, low=0, high=1, low_open=True)
    checks.probability("dropout", 0.0)
    with pytest.raises(ValueError, match="dropout"):
        checks.probability("dropout", 1.0, allow_one=False)


def test_choices_types_and_containers():
    checks.one_of("method", "loop", ("loop", "grouped_mm"))
    with pytest.raises(ValueError, match=r"method='x': expected one of \['loop', 'grouped_mm'\]"):
        checks.one_of("method", "x", ("loop", "grouped_mm"))
    with pytest.raises(TypeError, match="base must be a Linear, got int"):
        checks.instance("base", 3, torch.nn.Linear)
    with pytest.raises(TypeError, match="prompt must be a str or list, got int"):
        checks.instance("prompt", 3, (str, list))
    checks.string("query", "a")
    with pytest.raises(TypeError, match="query must be a string"):
        checks.string("query", None)
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        checks.string("query", "  ", non_empty=True)
    with pytest.raises(ValueError, match="docs must not be empty"):
        checks.non_empty("docs", [])
    with pytest.raises(ValueError, match=r"x must not be empty, got shape \(2, 0, 8\)"):
        checks.non_empty("x", torch.zeros(2, 0, 8))
    checks.same_length(a=[1], b=(2,))
    with pytest.raises(ValueError, match=r"responses \(2\), answers \(1\) must have the same length"):
        checks.same_length(responses=[1, 2], answers=[1])
    checks.divisible("hidden_size", 64, 8, divisor_name="num_heads")
    with pytest.raises(ValueError, match=r"hidden_size=30 must be divisible by num_heads=4 \(or pass head_dim\)"):
        checks.divisible("hidden_size", 30, 4, divisor_name="num_heads", why="or pass head_dim")


def test_tensors():
    x = torch.zeros(2, 3, 8)
    checks.tensor("x", x, ndim=3, floating=True, last_dim=8)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        checks.tensor("x", [1.0])
    with pytest.raises(ValueError, match=r"x must have 4 dimensions \(batch, heads, seq, head_dim\), got shape"):
        checks.tensor("x", x, ndim=4, shape="(batch, heads, seq, head_dim)")
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., d_model=4\)"):
        checks.tensor("x", x, last_dim=4, shape="(..., d_model=4)")
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        checks.tensor("logits", torch.arange(3), floating=True)
    checks.tensor("ids", torch.arange(3), integer=True)
    for bad in (torch.zeros(3), torch.zeros(3, dtype=torch.bool)):
        with pytest.raises(TypeError, match="ids must have an integer dtype"):
            checks.tensor("ids", bad, integer=True)
    checks.same_shape(a=x, b=torch.ones(2, 3, 8))
    with pytest.raises(ValueError, match=r"expected the same shape, got k \(2, 3, 8\), v \(2, 3\)"):
        checks.same_shape(k=x, v=torch.zeros(2, 3))
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        checks.same_shape(values=x, mask=[1])
