"""Policies: what decides each step of an agent.

* :class:`ScriptedLLM` — a fake LLM that replies from a script: tests and the lab drive the loop
  with it through correct runs, malformed outputs and endless loops;
* :class:`OraclePolicy` — a scripted agent that knows the question templates: it calls the real
  tools in the right order and reads their outputs (:func:`~course_utils.agents.questions.read_observation`).
  It is the upper bound, and it checks the tools and the evaluation: if it fails, they are wrong;
* :class:`LLMPolicy` — a language model, batched over many runs, free or under **constrained
  decoding** (chapter 07's llguidance processor): the output must be ``Thought: ...`` followed by
  ``Action: <a real tool>`` with ``Action Input:`` matching that tool's JSON schema, or ``Final Answer:``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence

from course_utils import checks
from course_utils.agents.questions import FAMILIES, SUB_TOOLS, Ask, match_question, read_observation

SPECIALIST_OF_TOOL = {"search": "ask_geography", "weather": "ask_weather", "calculator": "ask_math"}


class ScriptedLLM:
    """Replies with ``outputs`` in order (then keeps repeating the last one if ``repeat_last``, else
    raises). ``calls`` keeps a copy of the messages of every call."""

    def __init__(self, outputs: Sequence[str], repeat_last: bool = False):
        checks.non_empty("outputs", outputs)
        self.outputs, self.repeat_last = list(outputs), repeat_last
        self.calls: list[list[dict]] = []

    def __call__(self, messages: list[dict]) -> str:
        self.calls.append(copy.deepcopy(messages))
        i = len(self.calls) - 1
        if i >= len(self.outputs) and not self.repeat_last:
            raise RuntimeError(f"the script has only {len(self.outputs)} outputs")
        return self.outputs[min(i, len(self.outputs) - 1)]


def format_action(tool: str, args: dict, thought: str, format: str = "react") -> str:
    if format == "tool_calls":
        return "<tool_call>\n" + json.dumps({"name": tool, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"
    return f"Thought: {thought}\nAction: {tool}\nAction Input: {json.dumps(args, ensure_ascii=False)}"


def format_final(answer: str, thought: str = "I now know the final answer.", format: str = "react") -> str:
    return answer if format == "tool_calls" else f"Thought: {thought}\nFinal Answer: {answer}"


def _question_and_observations(messages: list[dict]) -> tuple[str | None, list[str]]:
    start = max((i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].startswith("Question: ")),
                default=None)
    if start is None:
        return None, []
    observations = []
    for m in messages[start + 1:]:
        if m["role"] == "tool":
            observations.append(m["content"])
        elif m["role"] == "user":
            observations.append(m["content"].removeprefix("Observation: "))
    return messages[start]["content"].removeprefix("Question: "), observations


class OraclePolicy:
    """The scripted upper bound (see the module doc). It works with the tools directly
    (``search``/``weather``/``calculator``) or, as a multi-agent orchestrator, through the specialist
    agents (``ask_geography``/``ask_weather``/``ask_math``), whose runs it also drives. It is stateless:
    each step replays the plan over the observations so far, so one instance serves any number of runs.
    A failed call is tried again, up to ``max_failures`` times in a row."""

    def __init__(self, max_failures: int = 3):
        checks.positive_int(max_failures=max_failures)
        self.max_failures = max_failures

    def next_output(self, messages: list[dict], tool_names: Sequence[str], format: str = "react") -> str:
        question, observations = _question_and_observations(messages)
        found = match_question(question) if question else None
        if found is None:
            return format_final("I do not know.", "I cannot answer this question.", format)
        family, entities = found
        delegate = any(name in SPECIALIST_OF_TOOL.values() for name in tool_names)
        plan = FAMILIES[family].plan(entities)
        ask: Ask = next(plan)
        failures = 0
        for obs in observations:
            value = None if obs.startswith("Error:") else (obs.strip() or None) if delegate else read_observation(ask, obs)
            if value is None:
                failures += 1
                if failures >= self.max_failures:
                    return format_final("I could not get the information I needed.", "The tool keeps failing.", format)
                continue
            failures = 0
            try:
                ask = plan.send(value)
            except StopIteration as stop:
                return format_final(stop.value, format=format)
        thought = "The last call failed; I will try again." if failures else ask.thought()
        tool, args = ask.action()
        if delegate:
            tool, args = SPECIALIST_OF_TOOL[SUB_TOOLS[ask.kind]], {"task": ask.text}
            if not failures:
                thought = f"I will ask the {tool.removeprefix('ask_')} agent: {ask.text}"
        return format_action(tool, args, thought, format)

    def __call__(self, messages: list[dict]) -> str:
        return self.next_output(messages, ())

    def batch(self, runs) -> list[str]:
        return [self.next_output(r.messages, list(r.tools), r.format) for r in runs]


def _bounded(schema: dict, max_chars: int) -> dict:
    """A copy of a JSON schema whose strings are at most ``max_chars`` long and objects closed, so a
    constrained output always finishes."""
    out = copy.deepcopy(schema)
    if out.get("type") == "string":
        out.setdefault("maxLength", max_chars)
    if out.get("type") == "object":
        out.setdefault("additionalProperties", False)
        out["properties"] = {k: _bounded(v, max_chars) for k, v in out.get("properties", {}).items()}
    for key in ("description", "title"):
        out.pop(key, None)
    return out


_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def action_grammar(tools: Sequence, format: str = "react", thought_chars: int = 120, answer_chars: int = 60,
                   argument_chars: int = 60) -> str:
    """A Lark grammar (llguidance) for one agent step: for ``"react"``::

        Thought: <up to thought_chars, one line>
        Action: <tool>
        Action Input: <JSON object valid for that tool's schema>

    or ``Thought: ...`` then ``Final Answer: <one line>``. For ``"tool_calls"``: a ``<tool_call>`` block
    whose ``name``/``arguments`` match one tool, or a one-line answer."""
    from course_utils.prompting.constrained import grammar

    checks.non_empty("tools", tools)
    checks.positive_int(thought_chars=thought_chars, answer_chars=answer_chars, argument_chars=argument_chars)
    answer = f'ANSWER: /[^\\n]{{1,{answer_chars}}}/'
    if format == "tool_calls":
        calls = [{"type": "object", "properties": {"name": {"const": t.name},
                                                    "arguments": _bounded(t.parameters, argument_chars)},
                  "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
        schema = json.dumps({"anyOf": calls, "x-guidance": _COMPACT})
        lark = f'start: "<tool_call>\\n" %json {schema} "\\n</tool_call>" | ANSWER\n{answer}\n'
        return grammar(lark=lark)
    rules = []
    for i, t in enumerate(tools):
        schema = json.dumps({**_bounded(t.parameters, argument_chars), "x-guidance": _COMPACT})
        rules.append(f'a{i}: "Action: {t.name}\\nAction Input: " %json {schema}')
    steps = " | ".join(["final"] + [f"a{i}" for i in range(len(tools))])
    lark = "\n".join(['start: "Thought: " THOUGHT "\\n" step', f"step: {steps}", 'final: "Final Answer: " ANSWER',
                      *rules, f'THOUGHT: /[^\\n]{{1,{thought_chars}}}/', answer]) + "\n"
    return grammar(lark=lark)


class LLMPolicy:
    """A chat model choosing each step, one batched generation for all active runs.

    ``constrained=True`` decodes under :func:`action_grammar` (valid by construction: the model still
    chooses the tool and the arguments); ``False`` lets it write freely and relies on the tolerant parser.
    Greedy by default. ``counter`` (chapter 07's :class:`~course_utils.prompting.llm.CallCounter`)
    counts completions and generated tokens."""

    def __init__(self, model, tokenizer, *, constrained: bool = True, max_new_tokens: int = 96, batch_size: int = 8,
                 temperature: float = 0.0, top_p: float = 1.0, counter=None, thought_chars: int = 120,
                 answer_chars: int = 60):
        from course_utils.prompting.llm import CallCounter

        checks.positive_int(max_new_tokens=max_new_tokens, batch_size=batch_size)
        self.model, self.tokenizer = model, tokenizer
        self.constrained, self.max_new_tokens, self.batch_size = constrained, max_new_tokens, batch_size
        self.temperature, self.top_p = temperature, top_p
        self.counter = counter if counter is not None else CallCounter()
        self.thought_chars, self.answer_chars = thought_chars, answer_chars
        self._grammars: dict[tuple, str] = {}

    def grammar_for(self, tools: Sequence, format: str) -> str:
        key = (format, tuple((t.name, json.dumps(t.parameters, sort_keys=True)) for t in tools))
        if key not in self._grammars:
            self._grammars[key] = action_grammar(tools, format, self.thought_chars, self.answer_chars)
        return self._grammars[key]

    def generate(self, conversations: list[tuple[list[dict], Sequence, str]]) -> list[str]:
        """One output per (messages, tools, format)."""
        from course_utils.agents.prompts import render_prompt
        from course_utils.prompting.constrained import constrained_generate
        from course_utils.prompting.llm import chat_generate

        prompts = [render_prompt(self.tokenizer, m, tools, fmt) for m, tools, fmt in conversations]
        kwargs = dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                      batch_size=self.batch_size, counter=self.counter)
        if self.constrained:
            grammars = [self.grammar_for(tools, fmt) for _, tools, fmt in conversations]
            outs = constrained_generate(self.model, self.tokenizer, prompts, grammars, **kwargs)
        else:
            outs = chat_generate(self.model, self.tokenizer, prompts, **kwargs)
        return [o[0] for o in outs]

    def batch(self, runs) -> list[str]:
        return self.generate([(r.messages, list(r.tools.values()), r.format) for r in runs])

    def for_tools(self, tools: Sequence, format: str = "react") -> Callable[[list[dict]], str]:
        """A plain ``messages → output`` function for these tools (what a hand-written loop calls)."""
        tools = list(tools)
        return lambda messages: self.generate([(messages, tools, format)])[0]
