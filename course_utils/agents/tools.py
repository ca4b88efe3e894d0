"""Tools an agent can call: a name, a description and a JSON schema of the arguments — the same
``{"type": "function", "function": {...}}`` object that chat templates render and OpenAI-style
APIs take — plus the Python function behind them.

A schema comes from the function itself: its type hints and its Google-style docstring, read by
``transformers.utils.get_json_schema`` (what ``apply_chat_template(tools=[fn])`` uses).

Errors are part of a tool's contract, because the agent must react to them:

* :class:`ToolError` — a *permanent* error (bad arguments, an unknown city): retrying the same
  call cannot help; the message goes back to the model as its observation;
* :class:`TransientToolError` — a *transient* one (HTTP 500, 429 rate limit, malformed response,
  timeout): the same call may succeed later, after ``retry_after`` seconds if the service said so;
* :class:`ToolTimeout` — the call took longer than the agent's budget (:func:`call_with_timeout`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from course_utils import checks


class ToolError(Exception):
    """A permanent tool error: the message is shown to the model."""


class TransientToolError(ToolError):
    """A transient error: the same call may succeed if retried (after ``retry_after`` seconds)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ToolTimeout(TransientToolError, TimeoutError):
    """The tool did not answer within the time budget."""


@dataclass
class Tool:
    """A callable tool. ``parameters`` is a JSON schema object (``properties``, ``required``);
    calling the tool checks the arguments against it, runs ``fn`` and returns its result as text."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] = field(repr=False)

    @classmethod
    def from_function(cls, fn: Callable[..., Any], name: str | None = None) -> Tool:
        """A tool whose schema is read from ``fn``'s type hints and docstring (``Args:`` section)."""
        from transformers.utils import get_json_schema

        spec = get_json_schema(fn)["function"]
        return cls(name=name or spec["name"], description=spec["description"], parameters=spec["parameters"], fn=fn)

    @property
    def parameter_names(self) -> list[str]:
        return list(self.parameters.get("properties", {}))

    def schema(self) -> dict[str, Any]:
        """The OpenAI / chat-template tool description."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def check_arguments(self, args: Any) -> None:
        """Raise :class:`ToolError` naming what is wrong with ``args`` (a dict of the schema's keys)."""
        import jsonschema

        expected = ", ".join(self.parameter_names) or "none"
        if not isinstance(args, Mapping):
            raise ToolError(f"the arguments of {self.name} must be a JSON object with the keys: {expected}")
        unknown = [k for k in args if k not in self.parameter_names]
        if unknown:
            raise ToolError(f"unexpected argument {unknown[0]!r} for {self.name} (expected: {expected})")
        try:
            jsonschema.validate(dict(args), self.parameters)
        except jsonschema.ValidationError as err:
            where = ".".join(str(p) for p in err.absolute_path) or "arguments"
            raise ToolError(f"bad arguments for {self.name}: {where}: {err.message}") from None

    def __call__(self, **args: Any) -> str:
        self.check_arguments(args)
        return str(self.fn(**args))


def call_with_timeout(fn: Callable[..., Any], kwargs: Mapping[str, Any], timeout: float) -> Any:
    """``fn(**kwargs)``, or :class:`ToolTimeout` if it has not returned after ``timeout`` seconds.

    The call runs in a daemon thread: a tool that hangs cannot hang the agent (the thread is left to
    finish on its own; Python cannot kill a thread). Whatever ``fn`` raises is raised here."""
    checks.positive_number(timeout=timeout)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn(**kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = err

    worker = threading.Thread(target=target, daemon=True, name=f"tool-{getattr(fn, 'name', 'call')}")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ToolTimeout(f"the tool did not answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def tool_table(tools: Any) -> dict[str, Tool]:
    """``{name: tool}`` from a list of tools (or such a dict), checking names are unique."""
    items = list(tools.values()) if isinstance(tools, Mapping) else list(tools)
    checks.non_empty("tools", items)
    table: dict[str, Tool] = {}
    for t in items:
        checks.instance("tools[...]", t, Tool)
        if t.name in table:
            raise ValueError(f"tools: two tools are named {t.name!r}")
        table[t.name] = t
    return table

