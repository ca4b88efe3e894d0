"""Reading an action out of a small model's output.

The ReAct format (Yao et al., 2023) asks the model for::

    Thought: I need the capital of Peru.
    Action: search
    Action Input: {"query": "capital of Peru"}

or ``Final Answer: ...``. A 135M model gets close but not exact, so :func:`parse_action` is
tolerant, in rules a person can check:

1. the text is cut at the first ``Observation:`` — a model that invents the tool's answer is stopped there;
2. markers are found anywhere, in any case (``action input:``, ``FINAL ANSWER:``);
3. whichever of ``Final Answer:`` and ``Action:`` comes first wins; the answer is the first non-empty
   line after ``Final Answer:``;
4. the tool name is matched without case, spaces, quotes, backticks or ``*``; ``search[Peru]`` (the
   ReAct paper's form) carries its input in the brackets;
5. the input is the first ``{...}`` block after ``Action Input:`` (code fences and trailing text are
   ignored), read as JSON, else as a Python dict literal (single quotes); an input that is not an
   object (``Action Input: Peru``, quotes stripped) is accepted when the tool takes exactly one argument.

Anything else is an error whose message tells the model what to fix. The result is a plain dict
(:class:`ParsedAction`): ``kind`` is ``"action"``, ``"final"`` or ``"error"``.

:func:`parse_tool_call` reads the other format, function calling through a chat template's tool
format (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, Hermes/Qwen style): a reply
without a tool call is the final answer.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from course_utils import checks

_MARKERS = re.compile(r"(?<![A-Za-z])(thought|action[ _]*input|action|final[ _]*answer|observation)\s*:", re.IGNORECASE)
_BRACKET = re.compile(r"^([^\[\](){}]+?)\s*[\[(](.*)[\])]\s*$", re.DOTALL)
_FENCE = re.compile(r"```[a-zA-Z]*")


class ParsedAction(TypedDict):
    """``kind``: ``"action"`` (``tool``, ``args``), ``"final"`` (``answer``) or ``"error"`` (``error``)."""

    kind: str
    thought: str
    tool: str | None
    args: dict[str, Any] | None
    answer: str | None
    error: str | None


def _result(kind: str, thought: str = "", tool: str | None = None, args: dict | None = None,
            answer: str | None = None, error: str | None = None) -> ParsedAction:
    return {"kind": kind, "thought": thought, "tool": tool, "args": args, "answer": answer, "error": error}


def _clean_name(name: str) -> str:
    return name.strip().strip("`'\"*").strip().lower()


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        return text[1:-1].strip()
    return text


def read_arguments(raw: str, parameters: Sequence[str]) -> dict[str, Any]:
    """The arguments in ``raw`` (rule 5); raises ``ValueError`` saying what is wrong."""
    from course_utils.prompting.constrained import first_json_object

    raw = _FENCE.sub("", raw).strip().strip("*").strip()  # markdown bold around a marker: **Action Input:**
    if "{" in raw:
        block = first_json_object(raw)
        try:
            value = json.loads(block)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(block)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise ValueError(f"Action Input is not valid JSON: {block[:80]!r}") from None
        if not isinstance(value, dict):
            raise ValueError("Action Input must be a JSON object")
        return value
    value = _unquote(raw.splitlines()[0] if raw else "")
    if not value:
        raise ValueError("Action Input is empty")
    if len(parameters) != 1:
        keys = ", ".join(parameters) or "none"
        raise ValueError(f"Action Input must be a JSON object with the keys: {keys}")
    return {parameters[0]: value}


def parse_action(text: str, tools: Mapping[str, Sequence[str]]) -> ParsedAction:
    """Parse a ReAct step. ``tools`` maps each tool name to its parameter names
    (``{"search": ["query"], "weather": ["city", "date"]}``)."""
    checks.instance("text", text, str)
    checks.instance("tools", tools, Mapping)
    cut = re.search(r"(?<![A-Za-z])observation\s*:", text, re.IGNORECASE)
    if cut:
        text = text[:cut.start()]
    marks = [(m.group(1).lower().replace("_", " "), m.start(), m.end()) for m in _MARKERS.finditer(text)]
    marks = [(" ".join(name.split()), start, end) for name, start, end in marks]

    def content(i: int) -> str:
        return text[marks[i][2]:marks[i + 1][1] if i + 1 < len(marks) else len(text)].strip()

    names = [m[0] for m in marks]
    if "thought" in names:
        thought = content(names.index("thought"))
    else:
        thought = text[:marks[0][1]].strip() if marks else ""
    final = names.index("final answer") if "final answer" in names else None
    action = names.index("action") if "action" in names else None
    if final is not None and (action is None or final < action):
        lines = [line.strip() for line in content(final).splitlines() if line.strip()]
        if not lines:
            return _result("error", thought, error="the Final Answer is empty")
        return _result("final", thought, answer=lines[0])
    if action is None:
        return _result("error", thought, error="no Action and no Final Answer found. Reply with 'Action:' and "
                                                "'Action Input:', or with 'Final Answer:'")
    body = content(action)
    first, _, rest = body.partition("\n")
    bracket = _BRACKET.match(first.strip())
    name = _clean_name(bracket.group(1) if bracket else first)
    table = {_clean_name(t): t for t in tools}
    if name not in table:
        listed = ", ".join(tools)
        return _result("error", thought, error=f"unknown tool {name!r}; the tools are: {listed}")
    tool = table[name]
    if bracket:
        raw = bracket.group(2)
    elif "action input" in names[action + 1:]:
        raw = content(names.index("action input", action + 1))
    elif rest.strip():
        raw = rest
    else:
        return _result("error", thought, tool=tool, error=f"missing Action Input for {tool}")
    try:
        args = read_arguments(raw, list(tools[tool]))
    except ValueError as err:
        return _result("error", thought, tool=tool, error=str(err))
    return _result("action", thought, tool=tool, args=args)


_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


def parse_tool_call(text: str, tools: Mapping[str, Sequence[str]]) -> ParsedAction:
    """Parse a reply in the chat template's tool-calling format: a ``<tool_call>`` block (or a bare
    ``{"name": ..., "arguments": ...}`` object) is an action; any other reply is the final answer."""
    checks.instance("text", text, str)
    m = _TOOL_CALL.search(text)
    block = m.group(1) if m else (text if text.lstrip().startswith("{") else None)
    if block is None:
        answer = text.strip()
        return _result("final", answer=answer) if answer else _result("error", error="the reply is empty")
    try:
        call = read_arguments(block, [])
    except ValueError as err:
        return _result("error", error=f"the tool call is not valid JSON: {err}")
    name = call.get("name")
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return _result("error", error="the tool call's arguments are not a JSON object")
    table = {_clean_name(t): t for t in tools}
    if not isinstance(name, str) or _clean_name(name) not in table:
        return _result("error", error=f"unknown tool {name!r}; the tools are: {', '.join(tools)}")
    if not isinstance(args, dict):
        return _result("error", tool=table[_clean_name(name)], error="the tool call's arguments must be a JSON object")
    return _result("action", tool=table[_clean_name(name)], args=args)
