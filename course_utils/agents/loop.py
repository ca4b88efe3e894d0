"""The agent loop, from scratch: Thought → Action → Observation until a final answer.

One *step* is one model output. :meth:`AgentRun.advance` takes it and does what it says:

1. parse it (:func:`~course_utils.agents.parsing.parse_action`, tolerant); an unreadable output
   becomes an error observation telling the model what to fix;
2. a final answer ends the run;
3. an action identical to one that already *succeeded* is a **repeat**: the tool is not called again,
   the model is told so, and after ``repeat_limit`` repeats the run stops (loop detection);
4. otherwise the tool runs under a timeout (:func:`~course_utils.agents.tools.call_with_timeout`).
   Transient errors (timeouts, HTTP 500, 429, malformed replies) are retried up to ``max_retries``
   times, waiting ``backoff · 2^attempt`` seconds, or the ``Retry-After`` the service asked for
   (at most ``max_wait``); permanent errors are not retried. Either way the error becomes the
   observation, so the model can change course;
5. after ``max_steps`` outputs without an answer the run stops with a graceful give-up answer.

Every step is kept in a :class:`Trace` (output, thought, action, observation, attempts, errors) that
renders as text. :func:`run_agents` drives many runs at once, so that one batched forward pass
serves every active conversation; a tool that is itself an agent (multi-agent) opens a child run,
and its final answer is the parent's observation. :class:`ConversationMemory` carries earlier
questions and answers into a new run (multi-turn use).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from course_utils import checks
from course_utils.agents.parsing import ParsedAction, parse_action, parse_tool_call
from course_utils.agents.prompts import FORMATS, TOOL_CALLS_SYSTEM, react_system_prompt
from course_utils.agents.tools import Tool, TransientToolError, call_with_timeout, tool_table

GIVE_UP = "I could not find the answer within {max_steps} steps."
LOOP_GIVE_UP = "I stopped because I kept repeating the same action."


@dataclass
class Step:
    """One model output and what came of it.

    ``kind``: ``"action"``, ``"final"`` or ``"invalid"`` (unparseable). ``error``: None, ``"parse"``,
    ``"repeat"``, ``"tool"`` (a permanent tool error) or ``"transient"`` (retries exhausted).
    ``attempts``: tool calls made (1 + retries); ``failures``: the message of each failed attempt."""

    output: str
    kind: str
    thought: str = ""
    tool: str | None = None
    args: dict[str, Any] | None = None
    observation: str | None = None
    error: str | None = None
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    child: Trace | None = None


@dataclass
class Trace:
    """A whole run: the question, every step, the answer and how the run ended (``status``:
    ``"answered"``, ``"step_limit"`` or ``"loop"``)."""

    question: str
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    status: str = "running"
    agent: str = "agent"
    messages: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def tool_calls(self) -> int:
        """Tool calls made, retries included (sub-agents count as one call of their tool)."""
        return sum(s.attempts for s in self.steps)

    @property
    def model_calls(self) -> int:
        """Model outputs generated, sub-agents included."""
        return len(self.steps) + sum(s.child.model_calls for s in self.steps if s.child is not None)

    def render(self, width: int = 160, indent: str = "") -> str:
        """The trace as text, one block per step."""
        def cut(text: str) -> str:
            text = " ".join(str(text).split())
            return text if len(text) <= width else text[:width - 1] + "…"

        lines = [f"{indent}[{self.agent}] Question: {self.question}"]
        for i, s in enumerate(self.steps, 1):
            mark = {"final": "✔", "invalid": "✗"}.get(s.kind, "→")
            lines.append(f"{indent}  {i}. {mark} Thought: {cut(s.thought) or '(none)'}")
            if s.kind == "action":
                lines.append(f"{indent}     Action: {s.tool} {json.dumps(s.args, ensure_ascii=False)}")
            if s.kind == "invalid":
                lines.append(f"{indent}     Output: {cut(s.output)}")
            for j, failure in enumerate(s.failures, 1):
                lines.append(f"{indent}     ! attempt {j} failed: {cut(failure)}")
            if s.child is not None:
                lines.append(s.child.render(width, indent + "       "))
            if s.kind == "final":
                lines.append(f"{indent}     Final Answer: {cut(self.answer if i == len(self.steps) else s.observation)}")
            elif s.observation is not None:
                lines.append(f"{indent}     Observation: {cut(s.observation)}")
        lines.append(f"{indent}  ⇒ {self.status}: {self.answer!r} ({len(self.steps)} steps, {self.tool_calls} tool "
                     f"calls, {self.model_calls} model calls)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class ConversationMemory:
    """Earlier turns of a conversation, replayed before a new question (the last ``max_turns``):
    each turn is the question and the agent's final answer, not its intermediate steps."""

    def __init__(self, max_turns: int = 5):
        checks.positive_int(max_turns=max_turns)
        self.max_turns = max_turns
        self.turns: list[tuple[str, str]] = []

    def add(self, question: str, answer: str) -> None:
        self.turns = (self.turns + [(question, answer)])[-self.max_turns:]

    def messages(self) -> list[dict[str, str]]:
        out = []
        for q, a in self.turns:
            out += [{"role": "user", "content": f"Question: {q}"},
                    {"role": "assistant", "content": f"Final Answer: {a}"}]
        return out

    def clear(self) -> None:
        self.turns = []


class AgentRun:
    """One agent answering one question, advanced one model output at a time (see the module doc)."""

    def __init__(self, tools: Sequence[Tool], question: str, *, max_steps: int = 6, max_retries: int = 2,
                 backoff: float = 0.25, max_wait: float = 5.0, tool_timeout: float = 5.0, repeat_limit: int = 2,
                 memory: ConversationMemory | None = None, system_prompt: str | None = None,
                 format: str = "react", name: str = "agent"):
        checks.positive_int(max_steps=max_steps, repeat_limit=repeat_limit)
        checks.non_negative_int(max_retries=max_retries)
        checks.number("backoff", backoff, low=0)
        checks.number("max_wait", max_wait, low=0)
        checks.positive_number(tool_timeout=tool_timeout)
        checks.one_of("format", format, FORMATS)
        checks.instance("question", question, str)
        self.tools = tool_table(tools)
        self.schemas = {name: t.parameter_names for name, t in self.tools.items()}
        self.max_steps, self.max_retries, self.repeat_limit = max_steps, max_retries, repeat_limit
        self.backoff, self.max_wait, self.tool_timeout = backoff, max_wait, tool_timeout
        self.memory, self.format, self.name = memory, format, name
        if system_prompt is None:
            system_prompt = react_system_prompt(list(self.tools.values())) if format == "react" else TOOL_CALLS_SYSTEM
        history = memory.messages() if memory is not None else []
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt}, *history,
                                               {"role": "user", "content": f"Question: {question}"}]
        self.trace = Trace(question=question, agent=name)
        self.succeeded: dict[str, str] = {}  # action key -> observation, for loop detection
        self.repeats = 0
        self.parent: AgentRun | None = None
        self.child: AgentRun | None = None

    @property
    def done(self) -> bool:
        return self.trace.status != "running"

    def leaf(self) -> AgentRun:
        """The run that needs the next model output: the deepest running sub-agent, else this one."""
        run = self
        while run.child is not None:
            run = run.child
        return run

    def parse(self, output: str) -> ParsedAction:
        if self.format == "tool_calls":
            return parse_tool_call(output, self.schemas)
        return parse_action(output, self.schemas)

    def advance(self, output: str) -> Step:
        """Take one model output: parse it, act on it, record the step (see the module doc)."""
        if self.done or self.child is not None:
            raise RuntimeError("this run is finished or waiting for a sub-agent")
        checks.instance("output", output, str)
        parsed = self.parse(output)
        step = Step(output=output, kind=parsed["kind"], thought=parsed["thought"])
        self.trace.steps.append(step)
        self.messages.append({"role": "assistant", "content": output})
        if parsed["kind"] == "final":
            self._finish("answered", parsed["answer"])
            return step
        if parsed["kind"] == "error":
            step.kind, step.error = "invalid", "parse"
            self._observe(step, f"Error: {parsed['error']}.")
            return step
        step.tool, step.args = parsed["tool"], parsed["args"]
        key = json.dumps([step.tool, step.args], sort_keys=True, default=str)
        if key in self.succeeded:
            self.repeats += 1
            step.error = "repeat"
            self._observe(step, f"Error: you already called {step.tool} with these arguments and got: "
                                f"{self.succeeded[key]} Use that result or do something else.")
            if self.repeats >= self.repeat_limit and not self.done:
                self._finish("loop", LOOP_GIVE_UP)
            return step
        tool = self.tools[step.tool]
        if hasattr(tool, "spawn"):  # a sub-agent: its final answer will be the observation
            try:
                tool.check_arguments(step.args)
            except Exception as err:  # noqa: BLE001 - bad arguments are an observation
                step.error = "tool"
                self._observe(step, f"Error: {err}")
                return step
            self.child = tool.spawn(**step.args)
            self.child.parent = self
            step.attempts = 1
            return step
        observation = self.call_tool(step, tool)
        if step.error is None:
            self.succeeded[key] = observation
        self._observe(step, observation)
        return step

    def call_tool(self, step: Step, tool: Tool) -> str:
        """Run the tool with retries for transient errors; returns the observation (an error message
        starting with ``Error:`` when it failed) and fills ``step.attempts``/``failures``/``error``."""
        t0 = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            step.attempts += 1
            try:
                result = call_with_timeout(tool, step.args, self.tool_timeout)
                step.error = None
                step.seconds = time.perf_counter() - t0
                return str(result)
            except TransientToolError as err:
                step.failures.append(str(err))
                step.error = "transient"
                if attempt < self.max_retries:
                    wait = max(self.backoff * 2 ** attempt, err.retry_after or 0.0)
                    time.sleep(min(wait, self.max_wait))
            except Exception as err:  # noqa: BLE001 - a permanent tool error becomes the observation
                message = str(err) if str(err) else type(err).__name__
                step.failures.append(message)
                step.error = "tool"
                break
        step.seconds = time.perf_counter() - t0
        suffix = f" (failed {step.attempts} times)" if step.error == "transient" else ""
        return f"Error: {step.failures[-1]}{suffix}"

    def resume(self) -> None:
        """The sub-agent has finished: its answer (or its give-up) is the observation of the step that called it."""
        child, self.child = self.child, None
        step = self.trace.steps[-1]
        step.child = child.trace
        if child.trace.status == "answered":
            self._observe(step, child.trace.answer or "")
        else:
            step.error = "tool"
            step.failures.append(f"the {child.name} agent gave up: {child.trace.answer}")
            self._observe(step, f"Error: the {child.name} agent gave up: {child.trace.answer}")

    def _observe(self, step: Step, observation: str) -> None:
        step.observation = observation
        if self.format == "tool_calls" and step.kind == "action":
            self.messages.append({"role": "tool", "name": step.tool, "content": observation})
        else:
            self.messages.append({"role": "user", "content": f"Observation: {observation}"})
        if len(self.trace.steps) >= self.max_steps and not self.done:
            self._finish("step_limit", GIVE_UP.format(max_steps=self.max_steps))

    def _finish(self, status: str, answer: str) -> None:
        self.trace.status, self.trace.answer = status, answer
        self.trace.messages = self.messages
        if self.memory is not None:
            self.memory.add(self.trace.question, answer)


def _outputs(llm, leaves: list[AgentRun]) -> list[str]:
    if hasattr(llm, "batch"):
        return list(llm.batch(leaves))
    return [llm(list(leaf.messages)) for leaf in leaves]


def run_agents(llm: Callable[[list[dict]], str] | Any, runs: Sequence[AgentRun], *, progress: bool = False,
               desc: str = "agents") -> list[Trace]:
    """Advance every run until it is done. ``llm`` is a callable ``messages → output`` or an object
    with ``batch(runs) → outputs`` (one batched generation for all runs still going)."""
    runs = list(runs)
    active = [r for r in runs if not r.done]
    bar = tqdm(total=len(runs), desc=desc, leave=False, disable=not progress)
    while active:
        leaves = [r.leaf() for r in active]
        for leaf, output in zip(leaves, _outputs(llm, leaves)):
            leaf.advance(output)
            while leaf.done and leaf.parent is not None:
                leaf = leaf.parent
                leaf.resume()
        still = [r for r in active if not r.done]
        bar.update(len(active) - len(still))
        active = still
    bar.close()
    return [r.trace for r in runs]


def run_agent(llm: Callable[[list[dict]], str] | Any, tools: Sequence[Tool], question: str, max_steps: int = 6,
              max_retries: int = 2, tool_timeout: float = 5.0, **options: Any) -> Trace:
    """Answer one question: ``llm(messages) → text`` decides, the tools act; returns the :class:`Trace`.
    ``options`` are those of :class:`AgentRun` (``backoff``, ``repeat_limit``, ``memory``, ``format``, ...)."""
    run = AgentRun(tools, question, max_steps=max_steps, max_retries=max_retries, tool_timeout=tool_timeout,
                   **options)
    return run_agents(llm, [run])[0]


class Agent:
    """A conversational agent: a policy, tools and a :class:`ConversationMemory` shared by its turns."""

    def __init__(self, llm, tools: Sequence[Tool], *, memory: ConversationMemory | None = None, **options: Any):
        self.llm, self.tools, self.options = llm, list(tools), options
        self.memory = memory if memory is not None else ConversationMemory()

    def ask(self, question: str) -> Trace:
        return run_agent(self.llm, self.tools, question, memory=self.memory, **self.options)
