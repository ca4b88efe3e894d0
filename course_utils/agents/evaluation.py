"""Scoring an agent on multi-hop questions.

* :func:`score_answer` — text answers match when the gold appears as a whole phrase (case and
  accents ignored); numeric answers when the number read from the answer (chapter 07's
  :func:`~course_utils.prompting.extract_number`) is within the question's tolerance of the gold.
* :func:`trace_metrics` — per run: success, steps, model and tool calls, parse errors, tool errors
  **recovered from** (a failed attempt followed, in the same run, by a successful call of the same
  tool — by a retry or by the model calling it again) and **fatal** (never followed by one).
* :func:`summarize` / :func:`success_by_hops` — rates over runs.
* :func:`pass_hat_k` — τ-bench's reliability metric (Yao et al., 2024): the chance that *all* of k
  independent trials of a task succeed, estimated without bias from n ≥ k trials with c successes as
  ``C(c, k) / C(n, k)`` and averaged over tasks. pass^1 is the success rate; pass^k falls with k
  unless the agent is consistent. (pass@k, the chance that *any* succeeds, is
  ``1 − C(n − c, k) / C(n, k)``.)
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from course_utils import checks
from course_utils.agents.encyclopedia import fold
from course_utils.agents.loop import Trace
from course_utils.prompting.answers import extract_number


def score_answer(answer: str | None, question: dict[str, Any]) -> bool:
    """Is ``answer`` right for ``question`` (a record with ``answer``, ``answer_type``, ``tolerance``)?"""
    if not isinstance(answer, str) or not answer.strip():
        return False
    if question["answer_type"] == "text":
        return re.search(rf"(?<!\w){re.escape(fold(question['answer']))}(?!\w)", fold(answer)) is not None
    value = extract_number(answer)
    return value is not None and abs(value - float(question["answer"])) <= float(question["tolerance"])


def _tool_errors(trace: Trace) -> tuple[int, int]:
    """(recovered, fatal) failed attempts of tool calls in a run."""
    recovered = fatal = 0
    steps = [s for s in trace.steps if s.kind == "action" and s.attempts > 0]
    for i, s in enumerate(steps):
        failed = len(s.failures)
        if not failed:
            continue
        later_success = s.error is None or any(t.tool == s.tool and t.error is None for t in steps[i + 1:])
        recovered += failed if later_success else 0
        fatal += 0 if later_success else failed
    return recovered, fatal


def trace_metrics(trace: Trace, question: dict[str, Any]) -> dict[str, Any]:
    """One row of the results table for one run."""
    recovered, fatal = _tool_errors(trace)
    return {"id": question.get("id"), "hops": question.get("hops"), "family": question.get("family"),
            "success": score_answer(trace.answer if trace.status == "answered" else None, question),
            "status": trace.status, "steps": len(trace.steps), "model_calls": trace.model_calls,
            "tool_calls": trace.tool_calls, "parse_errors": sum(s.error == "parse" for s in trace.steps),
            "repeats": sum(s.error == "repeat" for s in trace.steps), "errors_recovered": recovered,
            "errors_fatal": fatal, "answer": trace.answer}


def evaluate_traces(traces: Sequence[Trace], questions: Sequence[dict[str, Any]], **labels: Any) -> list[dict[str, Any]]:
    """Rows of :func:`trace_metrics`, with ``labels`` (e.g. ``policy="oracle", trial=0``) added to each."""
    if len(traces) != len(questions):
        raise ValueError(f"got {len(traces)} traces for {len(questions)} questions")
    return [{**labels, **trace_metrics(t, q)} for t, q in zip(traces, questions)]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Success rate, mean steps / model calls / tool calls, and total parse errors, repeats and
    tool errors recovered and fatal."""
    checks.non_empty("rows", rows)
    n = len(rows)
    return {"runs": n, "success": sum(r["success"] for r in rows) / n,
            "mean_steps": sum(r["steps"] for r in rows) / n,
            "mean_model_calls": sum(r["model_calls"] for r in rows) / n,
            "mean_tool_calls": sum(r["tool_calls"] for r in rows) / n,
            "parse_errors": sum(r["parse_errors"] for r in rows), "repeats": sum(r["repeats"] for r in rows),
            "errors_recovered": sum(r["errors_recovered"] for r in rows),
            "errors_fatal": sum(r["errors_fatal"] for r in rows)}


def success_by_hops(rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Success rate per hop count."""
    by: dict[int, list[bool]] = defaultdict(list)
    for r in rows:
        by[r["hops"]].append(bool(r["success"]))
    return {h: sum(v) / len(v) for h, v in sorted(by.items())}


def _trial_counts(results: Sequence[Sequence[bool]], k: int, metric: str) -> list[tuple[int, int]]:
    """``(n, c)`` per task: trials and successes, each task with at least ``k`` trials."""
    checks.positive_int(k=k)
    checks.non_empty("results", results)
    counts = []
    for i, trials in enumerate(results):
        n, c = len(trials), sum(bool(t) for t in trials)
        if n < k:
            raise ValueError(f"results[{i}] has {n} trials; {metric} needs at least k={k}")
        counts.append((n, c))
    return counts


def pass_hat_k(results: Sequence[Sequence[bool]], k: int) -> float:
    """τ-bench's pass^k: ``mean over tasks of C(c, k) / C(n, k)`` for a task with ``c`` successes in
    ``n`` trials (``results[task]`` is the list of trial outcomes; every task needs n ≥ k)."""
    counts = _trial_counts(results, k, "pass^k")
    return sum(math.comb(c, k) / math.comb(n, k) for n, c in counts) / len(counts)


def pass_at_k(results: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k: ``mean over tasks of 1 − C(n − c, k) / C(n, k)`` (at least one of k trials succeeds)."""
    counts = _trial_counts(results, k, "pass@k")
    return sum(1 - math.comb(n - c, k) / math.comb(n, k) for n, c in counts) / len(counts)
