"""What the model reads: the ReAct system prompt built from the tools' schemas, and the chat
template's own tool format where the template has one.

Two formats:

* ``"react"`` — the tools and the Thought/Action/Action Input/Final Answer format are described in
  the system prompt; each observation comes back as a user message ``Observation: ...``. Works with
  any chat model (SmolLM2's template knows nothing of tools).
* ``"tool_calls"`` — the tools go to ``tokenizer.apply_chat_template(messages, tools=[...])``, which
  renders them the way the model was trained to read them (Qwen2.5, Llama 3.1, Mistral, SmolLM3...);
  the model answers with a ``<tool_call>`` block and results come back as ``role="tool"`` messages.

:func:`supports_tools` tells them apart: a template supports tools if rendering with a tool changes the
prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from course_utils.agents.tools import Tool

FORMATS = ("react", "tool_calls")

REACT_INSTRUCTIONS = """Use this format:
Thought: what you need to do next
Action: the tool to use, one of [{names}]
Action Input: the arguments as a JSON object
Then you will see an Observation with the result. Repeat until you know the answer, then write:
Thought: I know the answer
Final Answer: the answer only"""

TOOL_CALLS_SYSTEM = ("You answer questions with the tools you are given. Call one tool at a time. When you know "
                     "the answer, reply with the answer only.")


def argument_signature(tool: Tool) -> str:
    """``{"city": string, "date": string}`` from the tool's JSON schema."""
    props = tool.parameters.get("properties", {})
    return "{" + ", ".join(f"{json.dumps(k)}: {v.get('type', 'any')}" for k, v in props.items()) + "}"


def react_system_prompt(tools: Sequence[Tool], intro: str = "You answer questions using tools.") -> str:
    """The ReAct system prompt: one line per tool (name, description, arguments), then the format."""
    lines = [intro, "Tools:"]
    lines += [f"{t.name}: {t.description} Arguments: {argument_signature(t)}" for t in tools]
    return "\n".join(lines) + "\n\n" + REACT_INSTRUCTIONS.format(names=", ".join(t.name for t in tools))


def supports_tools(tokenizer) -> bool:
    """Does the tokenizer's chat template render tool descriptions?"""
    probe = Tool(name="probe_tool_xyz", description="probe", fn=lambda: "",
                 parameters={"type": "object", "properties": {}, "required": []})
    messages = [{"role": "user", "content": "hi"}]
    try:
        plain = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        with_tools = tokenizer.apply_chat_template(messages, tools=[probe.schema()], tokenize=False,
                                                   add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that fails on tools does not support them
        return False
    return plain != with_tools and "probe_tool_xyz" in with_tools


def render_prompt(tokenizer, messages: list[dict], tools: Sequence[Tool], format: str = "react") -> str:
    """The prompt text for the next model step (ending where the assistant starts to write)."""
    kwargs = {"tools": [t.schema() for t in tools]} if format == "tool_calls" else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


# A Hermes-style template with tool support (the format of Qwen2.5 and NousResearch's Hermes models),
# for models whose own template has none: install it with ``tokenizer.chat_template = HERMES_TOOL_TEMPLATE``.
HERMES_TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    "XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
    "{% elif messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% elif message['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message['content'] }}\n"
    "</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
