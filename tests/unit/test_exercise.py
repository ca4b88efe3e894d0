"""course_utils.exercise: checks that print a verdict and never raise; answers quoting the run."""

from __future__ import annotations

import pytest
import torch

from course_utils.exercise import check_function, check_value, fill_metrics, show_answer
from course_utils.generation import top_k_filter


def _not_yet(z, k):
    raise NotImplementedError


def test_check_function_verdicts(capsys):
    cases = [(torch.tensor([1.0, 3.0, 2.0]), 1), (torch.tensor([[0.0, 1.0], [2.0, 2.0]]), 1), (torch.zeros(3), 0)]
    assert check_function(top_k_filter, reference=top_k_filter, cases=cases)
    assert "✓ top_k_filter: right on all 3 cases" in capsys.readouterr().out
    assert not check_function(_not_yet, reference=top_k_filter, cases=cases)
    assert "not attempted yet" in capsys.readouterr().out

    def no_check(z, k):  # right values, but it does not reject k = 0
        return top_k_filter(z, max(k, 1))

    assert not check_function(no_check, reference=top_k_filter, cases=cases, hint="k must be >= 1")
    out = capsys.readouterr().out
    assert "case 3 of 3" in out and "expected ValueError to be raised" in out and "hint: k must be >= 1" in out

    def wrong(z, k):
        return z

    assert not check_function(wrong, reference=top_k_filter, cases=cases)
    assert "case 1 of 3 is wrong" in capsys.readouterr().out


def test_check_value(capsys):
    assert not check_value(..., expected=14.0)
    assert "not attempted yet" in capsys.readouterr().out
    assert check_value(14.05, expected=14.0, rtol=0.01)
    assert not check_value(28, expected=14.0, hint="2 bytes per parameter")
    assert "hint: 2 bytes per parameter" in capsys.readouterr().out


def test_fill_metrics_and_show_answer(capsys):
    metrics = {"ratio": 8.0, "hit@5": 0.95, "top1_prob_T0.5": 0.54321}
    text = fill_metrics(r"GQA: {{ratio:.0f}}x; hit@5 {{hit@5:.2f}}, p {{top1_prob_T0.5}}; $\frac{a}{b}$", metrics)
    assert text == r"GQA: 8x; hit@5 0.95, p 0.5432; $\frac{a}{b}$"
    with pytest.raises(KeyError, match="'missing'"):
        fill_metrics("{{missing}}", metrics)
    show_answer("GQA saves {{ratio}}x", metrics=metrics)  # a float shows 4 significant digits
    assert "GQA saves 8x" in capsys.readouterr().out
