"""The same tools and tasks with ``smolagents`` (Hugging Face's agent framework), beside the loop from scratch.

* :func:`to_smolagents` wraps one of our :class:`~course_utils.agents.tools.Tool` objects as a
  ``smolagents.Tool`` — same name, description and JSON-schema inputs, and ``forward`` calls our tool,
  so its argument checks and errors are kept (smolagents shows a raised error to the model as
  ``Error: ...`` and lets it try again). The tools are wrapped, not rewritten.
* :class:`PolicyModel` is a ``smolagents.Model`` driven by one of our policies (the oracle, a
  :class:`~course_utils.agents.policies.ScriptedLLM`): it reads the task and the observations out of
  smolagents' memory, asks the policy for a ReAct step, and writes it in the framework's own format —
  a JSON tool call for a ``ToolCallingAgent``, a Python snippet for a ``CodeAgent``. This proves the
  wrapping offline and gives the framework's upper bound.
* :func:`transformers_model` is smolagents' own ``TransformersModel`` on the offline model's folder:
  the real LLM inside the framework's prompts (several thousand tokens of instructions and examples).
* :func:`run_smolagents` runs an agent on questions and returns each answer, step count and error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from course_utils import checks
from course_utils.agents.parsing import parse_action
from course_utils.agents.tools import Tool

_JSON_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean",
               "object": "object", "array": "array"}


def to_smolagents(tool: Tool):
    """A ``smolagents.Tool`` that calls ``tool`` (same name, description, inputs; output: a string)."""
    import smolagents

    checks.instance("tool", tool, Tool)
    props = tool.parameters.get("properties", {})
    inputs = {k: {"type": _JSON_TYPES.get(v.get("type", "string"), "any"), "description": v.get("description", k)}
              for k, v in props.items()}
    ours = tool

    class Wrapped(smolagents.Tool):
        name = ours.name
        description = ours.description
        output_type = "string"
        skip_forward_signature_validation = True

        def forward(self, **kwargs: Any) -> str:
            return ours(**kwargs)

    Wrapped.inputs = inputs
    return Wrapped()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def _observation(text: str) -> str:
    text = re.sub(r"^Call id: \S+\n", "", text.strip())
    if text.startswith("Error:"):
        return "Error: " + text.removeprefix("Error:").strip().split("\nNow let's retry")[0]
    text = text.removeprefix("Observation:").strip()
    if "Last output from code snippet:" in text:
        logs, _, last = text.partition("Last output from code snippet:")
        logs = logs.removeprefix("Execution logs:").strip()
        return logs or last.strip()
    return text.removeprefix("Execution logs:").strip()


def react_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """Our conversation (``Question:`` then one ``Observation:`` per tool result) from smolagents' memory."""
    out: list[dict[str, str]] = []
    for m in messages:
        role = m["role"] if isinstance(m, dict) else m.role
        content = _text(m["content"] if isinstance(m, dict) else m.content)
        role = getattr(role, "value", role)
        if role == "user" and content.startswith("New task:"):
            out = [{"role": "user", "content": "Question: " + content.removeprefix("New task:").strip()}]
        elif out and role in ("tool-response", "tool") or out and role == "user" and content.startswith("Observation"):
            out.append({"role": "user", "content": "Observation: " + _observation(content)})
    return out


class PolicyModel:
    """A ``smolagents.Model`` whose every step is chosen by ``policy`` (``messages → ReAct text``).

    ``style="tool_calling"`` answers with ``{"name": tool, "arguments": {...}}`` (``final_answer`` for
    the answer); ``style="code"`` with ``Thought: ...`` and a ``<code>`` block calling the tool and
    printing its result (``final_answer("...")`` for the answer)."""

    def __new__(cls, policy: Callable[[list[dict]], str], tool_names: Sequence[str], style: str = "tool_calling"):
        import smolagents

        checks.one_of("style", style, ("tool_calling", "code"))

        class _PolicyModel(smolagents.Model):
            def generate(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None,
                         **kwargs):
                ours = react_messages(messages)
                text = policy(ours)
                parsed = parse_action(text, {name: [] for name in tool_names})
                if parsed["kind"] == "action":
                    tool, args = parsed["tool"], parsed["args"]
                elif parsed["kind"] == "final":
                    tool, args = "final_answer", {"answer": parsed["answer"]}
                else:  # what the policy wrote, unparsed: the framework reports the error
                    return smolagents.ChatMessage(role=smolagents.MessageRole.ASSISTANT, content=text)
                if style == "tool_calling":
                    content = json.dumps({"name": tool, "arguments": args}, ensure_ascii=False)
                elif tool == "final_answer":
                    content = f"Thought: {parsed['thought']}\n<code>\nfinal_answer({args['answer']!r})\n</code>"
                else:
                    call = ", ".join(f"{k}={v!r}" for k, v in args.items())
                    content = f"Thought: {parsed['thought']}\n<code>\nprint({tool}({call}))\n</code>"
                return smolagents.ChatMessage(role=smolagents.MessageRole.ASSISTANT, content=content)

        return _PolicyModel(model_id="course-policy")


def transformers_model(name: str = "smollm2-135m-instruct", *, device: str = "cpu", max_new_tokens: int = 128):
    """smolagents' ``TransformersModel`` on an offline model's cached folder (nothing is downloaded)."""
    import smolagents

    from course_utils.models import offline_model_dir

    checks.positive_int(max_new_tokens=max_new_tokens)
    return smolagents.TransformersModel(model_id=str(offline_model_dir(name)), device_map=device,
                                        max_new_tokens=max_new_tokens, do_sample=False)


def make_agent(kind: str, tools: Sequence[Tool], model, *, max_steps: int = 6):
    """A ``ToolCallingAgent`` (``kind="tool_calling"``) or ``CodeAgent`` (``"code"``) with our tools, wrapped."""
    import smolagents

    checks.one_of("kind", kind, ("tool_calling", "code"))
    checks.positive_int(max_steps=max_steps)
    wrapped = [to_smolagents(t) for t in tools]
    cls = smolagents.ToolCallingAgent if kind == "tool_calling" else smolagents.CodeAgent
    # smolagents' own console log is off: each run's step errors are returned by run_smolagents
    return cls(tools=wrapped, model=model, max_steps=max_steps, verbosity_level=smolagents.LogLevel.OFF)


def run_smolagents(agent, questions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``agent`` on each question: ``{"answer", "steps", "error", "step_errors"}`` per question (a run
    that hits smolagents' step limit returns its own forced final answer; ``step_errors`` lists the
    errors smolagents fed back to the model, e.g. an output it could not parse)."""
    out = []
    for q in questions:
        error = None
        try:
            answer = agent.run(q["question"], reset=True)
        except Exception as err:  # noqa: BLE001 - a framework failure is a failed run, recorded
            answer, error = None, f"{type(err).__name__}: {err}"
        actions = [s for s in agent.memory.steps if type(s).__name__ == "ActionStep"]
        step_errors = [str(s.error) for s in actions if getattr(s, "error", None) is not None]
        out.append({"answer": None if answer is None else str(answer), "steps": len(actions), "error": error,
                    "step_errors": step_errors})
    return out
