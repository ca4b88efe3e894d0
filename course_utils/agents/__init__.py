"""Agents with tools (chapter 09): real tools, the ReAct loop from scratch, multi-agent, evaluation.

* :mod:`~course_utils.agents.calculator` — a safe calculator over ``ast`` (never ``eval``);
* :mod:`~course_utils.agents.encyclopedia` — an offline encyclopedia of countries, searched with BM25;
* :mod:`~course_utils.agents.weather` — a weather API as a real FastAPI service with injectable faults,
  its httpx client and ``weather_service()`` to start and stop it;
* :mod:`~course_utils.agents.tools` — tools described by a JSON schema; permanent vs transient errors;
* :mod:`~course_utils.agents.parsing` — a tolerant ReAct parser, and the chat template's tool-call format;
* :mod:`~course_utils.agents.loop` — the loop: step limit, loop detection, retries with backoff,
  error observations, give-up answer, traces, conversation memory, batched runs;
* :mod:`~course_utils.agents.policies` — a scripted fake LLM, the scripted oracle, an LLM under
  constrained decoding;
* :mod:`~course_utils.agents.multi_agent` — an orchestrator delegating to specialist agents;
* :mod:`~course_utils.agents.questions` / :mod:`~course_utils.agents.evaluation` — multi-hop questions
  generated from the data, success, steps, errors recovered vs fatal, pass^k;
* :mod:`~course_utils.agents.sft` — tool-use LoRA fine-tuning on the oracle's trajectories;
* :mod:`~course_utils.agents.smol` — the same tools and tasks with ``smolagents``;
* :mod:`~course_utils.agents.lab` — the reference answers of lab 08, with the student's signatures.

The calculator *function* is ``course_utils.agents.calculator.calculator`` (the package attribute
``calculator`` is its module). Names are imported on first use, so that starting the weather service does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "calculator": ["CalculatorError", "calculate", "calculator_tool", "format_number"],
    "encyclopedia": ["Country", "Encyclopedia", "load_countries", "render_article"],
    "weather": ["FAULTS", "WeatherClient", "course_tools", "local_weather_tool", "weather_report", "weather_service"],
    "tools": ["Tool", "ToolError", "ToolTimeout", "TransientToolError", "call_with_timeout"],
    "parsing": ["ParsedAction", "parse_action", "parse_tool_call"],
    "prompts": ["HERMES_TOOL_TEMPLATE", "react_system_prompt", "render_prompt", "supports_tools"],
    "loop": ["Agent", "AgentRun", "ConversationMemory", "GIVE_UP", "LOOP_GIVE_UP", "Step", "Trace", "run_agent",
             "run_agents"],
    "policies": ["LLMPolicy", "OraclePolicy", "ScriptedLLM", "action_grammar"],
    "multi_agent": ["AgentTool", "orchestrator_run", "specialist_tools"],
    "questions": ["FAMILIES", "generate_questions", "load_questions"],
    "evaluation": ["evaluate_traces", "pass_at_k", "pass_hat_k", "score_answer", "success_by_hops", "summarize",
                   "trace_metrics"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'course_utils.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(f"course_utils.agents.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return __all__
