"""The reference answers of lab 08 (agents), with the exact signatures the student writes.

They are thin: the same rules as the chapter's code, in the lab's simpler contract.

* :func:`parse_step` — :func:`~course_utils.agents.parsing.parse_action` reduced to what the lab asks for;
* :func:`run_loop` — the loop without retries or loop detection: parse, act, observe, stop at the final
  answer or after ``max_steps`` outputs; a tool error or timeout becomes an ``Error: ...`` observation;
* :func:`evaluate_answers` — success overall and by hop count, scored by
  :func:`~course_utils.agents.evaluation.score_answer`.

The safe calculator's reference is :func:`course_utils.agents.calculator.calculate` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from course_utils.agents.loop import GIVE_UP
from course_utils.agents.parsing import parse_action
from course_utils.agents.tools import call_with_timeout


def parse_step(text: str, tools: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """``{"kind": "action" | "final" | "error", "tool", "args", "answer"}`` for one model output;
    ``tools`` maps each tool name to its parameter names."""
    parsed = parse_action(text, tools)
    return {"kind": parsed["kind"], "tool": parsed["tool"] if parsed["kind"] == "action" else None,
            "args": parsed["args"], "answer": parsed["answer"]}


def run_loop(llm: Callable[[list[dict]], str], tools: Mapping[str, Callable[..., Any]], question: str,
             max_steps: int = 6, tool_timeout: float = 2.0) -> dict[str, Any]:
    """Run the ReAct loop. ``llm(messages) → text``; ``tools`` maps names to functions called with the
    action's arguments as keywords. Returns ``{"answer", "status", "steps"}``: ``status`` is
    ``"answered"`` or ``"step_limit"`` (then ``answer`` is ``GIVE_UP.format(max_steps=...)``); each step
    is ``{"output", "kind", "tool", "args", "observation"}``."""
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    if not isinstance(tool_timeout, (int, float)) or tool_timeout <= 0:
        raise ValueError(f"tool_timeout must be a positive number, got {tool_timeout!r}")
    import inspect

    schemas = {name: list(inspect.signature(fn).parameters) for name, fn in tools.items()}
    messages = [{"role": "user", "content": f"Question: {question}"}]
    steps: list[dict[str, Any]] = []
    for _ in range(max_steps):
        output = llm([dict(m) for m in messages])
        parsed = parse_step(output, schemas)
        step = {"output": output, "kind": parsed["kind"], "tool": parsed["tool"], "args": parsed["args"],
                "observation": None}
        steps.append(step)
        messages.append({"role": "assistant", "content": output})
        if parsed["kind"] == "final":
            return {"answer": parsed["answer"], "status": "answered", "steps": steps}
        if parsed["kind"] == "error":
            observation = "Error: could not read an action; write 'Action:' and 'Action Input:', or 'Final Answer:'"
        else:
            try:
                observation = str(call_with_timeout(tools[parsed["tool"]], parsed["args"], tool_timeout))
            except Exception as err:  # noqa: BLE001 - every tool failure becomes the observation
                observation = f"Error: {err or type(err).__name__}"
        step["observation"] = observation
        messages.append({"role": "user", "content": f"Observation: {observation}"})
    return {"answer": GIVE_UP.format(max_steps=max_steps), "status": "step_limit", "steps": steps}


def evaluate_answers(answers: Sequence[str | None], questions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"success": rate, "by_hops": {"1": rate, ...}, "correct": [bool, ...]}`` for answers to questions."""
    from course_utils.agents.evaluation import score_answer

    if len(answers) != len(questions):
        raise ValueError(f"answers has {len(answers)} items for {len(questions)} questions")
    if not questions:
        raise ValueError("questions is empty")
    correct = [score_answer(a, q) for a, q in zip(answers, questions)]
    by: dict[str, list[bool]] = {}
    for ok, q in zip(correct, questions):
        by.setdefault(str(q["hops"]), []).append(ok)
    return {"success": sum(correct) / len(correct),
            "by_hops": {h: sum(v) / len(v) for h, v in sorted(by.items(), key=lambda item: int(item[0]))},
            "correct": correct}
