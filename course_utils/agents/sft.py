"""Tool-use fine-tuning: teach a small model to be an agent from trajectories of the oracle.

Prompting a 135M model with tool descriptions does not make it an agent. What does (FireAct, Chen et
al., 2023; AgentTuning, Zeng et al., 2023; Toolformer's self-supervised variant) is fine-tuning on
*trajectories*: whole conversations of a good agent — system prompt, question, Thought/Action steps,
observations from the real tools, final answer. The oracle provides them on the *training*
questions (countries disjoint from the held-out ones), through the same loop and the same tools,
including the tools' failures and the retries that followed.

The loss is on the model's own turns only: every assistant message of the conversation (its
Thought/Action/Final Answer and the end-of-turn token), ``−100`` on the system prompt, questions and
observations — chapter 05's masking (:func:`course_utils.alignment.tokenize_for_sft`) extended to
many turns. Training is chapter 05's LoRA and loop (:func:`~course_utils.alignment.apply_lora`,
:func:`~course_utils.alignment.train.train_lm`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from course_utils import checks
from course_utils.agents.evaluation import score_answer
from course_utils.agents.loop import AgentRun, Trace, run_agents
from course_utils.agents.multi_agent import orchestrator_run
from course_utils.agents.policies import OraclePolicy
from course_utils.agents.tools import Tool
from course_utils.alignment.chat import IGNORE_INDEX

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def trajectory_example(tokenizer, messages: list[dict], max_length: int | None = None) -> dict[str, list[int]] | None:
    """Token ids and labels of a whole conversation with the loss on every assistant message.

    The conversation is cut at each assistant turn: the text before it (rendered with
    ``add_generation_prompt=True``) is context (labels −100), the turn itself up to the template's
    end-of-turn is the target. The pieces concatenate to exactly the template's rendering of the
    whole conversation. Returns None when longer than ``max_length`` tokens."""
    checks.non_empty("messages", messages)
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError("the chat template does not render the conversation as a sequence of prefixes")
        context = tokenizer(prompt[len(done):], add_special_tokens=False)["input_ids"]
        target = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids += context + target
        labels += [IGNORE_INDEX] * len(context) + target
        done = full
    if not done:
        raise ValueError("messages has no assistant turn to learn from")
    if max_length is not None and len(ids) > max_length:
        return None
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def _conversations(trace: Trace) -> list[list[dict]]:
    out = [trace.messages]
    for s in trace.steps:
        if s.child is not None and s.child.status == "answered":
            out += _conversations(s.child)
    return out


def oracle_trajectories(questions: Sequence[dict[str, Any]], tools: Mapping[str, Tool], *, multi_agent: bool = True,
                        progress: bool = False, **run_options: Any) -> tuple[list[list[dict]], list[Trace]]:
    """The oracle's conversations on ``questions`` (single agent, and the orchestrator's and each
    specialist's when ``multi_agent``), kept only where the final answer is right → (conversations, traces)."""
    checks.non_empty("questions", questions)
    runs = [AgentRun(list(tools.values()), q["question"], **run_options) for q in questions]
    if multi_agent:
        runs += [orchestrator_run(q["question"], tools, **run_options) for q in questions]
    traces = run_agents(OraclePolicy(), runs, progress=progress, desc="oracle trajectories")
    asked = list(questions) * (2 if multi_agent else 1)
    conversations = []
    for trace, q in zip(traces, asked):
        if trace.status == "answered" and score_answer(trace.answer, q):
            conversations += _conversations(trace)
    return conversations, traces


def finetune_agent(model, tokenizer, conversations: Sequence[list[dict]], *, steps: int, batch_size: int = 4,
                   lr: float = 1e-3, r: int = 16, alpha: float = 32.0, max_length: int = 1024,
                   target_modules: tuple[str, ...] = TARGET_MODULES, seed: int = 0) -> dict[str, Any]:
    """Wrap ``model`` with LoRA adapters (in place) and train them on the conversations (loss on the
    assistant turns). Returns ``{"losses": [...], "examples": n, "dropped": n_too_long, "tokens": n}``."""
    from course_utils.alignment import apply_lora
    from course_utils.alignment.train import train_lm

    checks.positive_int(steps=steps, batch_size=batch_size, r=r, max_length=max_length)
    examples = [trajectory_example(tokenizer, c, max_length) for c in conversations]
    kept = [e for e in examples if e is not None]
    if not kept:
        raise ValueError(f"every conversation is longer than max_length={max_length} tokens")
    apply_lora(model, target_modules=target_modules, r=r, alpha=alpha)
    losses = train_lm(model, kept, steps=steps, batch_size=batch_size, lr=lr, pad_token_id=tokenizer.pad_token_id,
                      seed=seed, desc="tool-use LoRA")
    return {"losses": losses, "examples": len(kept), "dropped": len(examples) - len(kept),
            "tokens": sum(len(e["input_ids"]) for e in kept)}
