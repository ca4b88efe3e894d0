"""Multi-agent: an orchestrator that routes one-hop sub-questions to specialist agents.

Each specialist is an ordinary ReAct agent with one tool and a narrow job:

* **geography** — ``search`` (the encyclopedia): capitals, populations, areas;
* **weather** — ``weather`` (the HTTP service): a temperature in a city on a date;
* **math** — ``calculator``: one expression.

The orchestrator is a ReAct agent too, whose tools are the specialists (``ask_geography`` ...): it
plans the chain, delegates one sub-question at a time, and combines the answers. An
:class:`AgentTool` opens a child :class:`~course_utils.agents.loop.AgentRun`; the loop drives the
child, and the child's final answer becomes the orchestrator's observation. Compared with one agent
holding all the tools, each model call sees a shorter prompt and fewer choices, at the price of more
calls (every hop costs a delegation, a tool call and an answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from course_utils.agents.loop import AgentRun
from course_utils.agents.prompts import react_system_prompt
from course_utils.agents.tools import Tool

SPECIALISTS = {
    "geography": ("search", "Ask the geography agent, which searches an encyclopedia of countries, one simple "
                            "question, e.g. \"What is the capital of Peru?\""),
    "weather": ("weather", "Ask the weather agent one question about a temperature, e.g. \"What is the "
                           "temperature in Lima on 2026-01-15, in degrees Celsius?\""),
    "math": ("calculator", "Ask the math agent to compute one expression, e.g. \"What is 22.4 * 9 / 5 + 32?\""),
}
ORCHESTRATOR_INTRO = "You answer questions by asking specialist agents. Each agent answers one simple question."


class AgentTool(Tool):
    """A tool that is an agent: calling it with ``task`` starts a sub-agent with ``tools``."""

    def __init__(self, agent_name: str, description: str, tools: Sequence[Tool], **run_options: Any):
        super().__init__(name=f"ask_{agent_name}", description=description, fn=self._direct_call,
                         parameters={"type": "object", "required": ["task"],
                                     "properties": {"task": {"type": "string", "description": "one simple question"}}})
        self.agent_name, self.tools, self.run_options = agent_name, list(tools), run_options

    def _direct_call(self, task: str) -> str:
        raise RuntimeError("an agent tool runs inside the agent loop (run_agents), not by a direct call")

    def spawn(self, task: str) -> AgentRun:
        return AgentRun(self.tools, task, name=self.agent_name, **self.run_options)


def specialist_tools(tools: Mapping[str, Tool], *, max_steps: int = 4, **run_options: Any) -> list[AgentTool]:
    """The specialists for the given tools (``{"search": ..., "weather": ..., "calculator": ...}``)."""
    out = []
    for name, (tool_name, description) in SPECIALISTS.items():
        if tool_name in tools:
            out.append(AgentTool(name, description, [tools[tool_name]], max_steps=max_steps, **run_options))
    if not out:
        raise ValueError(f"tools must include one of {[t for t, _ in SPECIALISTS.values()]}, got {list(tools)}")
    return out


def orchestrator_run(question: str, tools: Mapping[str, Tool], *, max_steps: int = 8, specialist_steps: int = 4,
                     **run_options: Any) -> AgentRun:
    """A run of the orchestrator on ``question``; ``run_options`` (retries, timeouts) apply to every agent."""
    agents = specialist_tools(tools, max_steps=specialist_steps, **run_options)
    return AgentRun(agents, question, max_steps=max_steps, name="orchestrator",
                    system_prompt=react_system_prompt(agents, intro=ORCHESTRATOR_INTRO), **run_options)
