"""Chat formatting for supervised fine-tuning, with the loss masked to the response.

Two layouts are taught:

* the syllabus's **Llama-2** format (§15.4.1)::

      <s>[INST] <<SYS>>
      {system}
      <</SYS>>

      {user} [/INST] {response} </s>

* the tokenizer's own **chat template** (``tokenizer.apply_chat_template``; ChatML for
  SmolLM2: ``<|im_start|>user ... <|im_end|>``).

SFT trains only on the response: the prompt positions of ``labels`` are set to ``-100``,
the index that ``torch.nn.functional.cross_entropy`` (and every Hugging Face model) ignores,
so the loss is ``-(1/|R|) Σ_{t ∈ R} log p(y_t | y_<t)`` over the response tokens ``R``.
"""

from __future__ import annotations

from typing import Any

from course_utils import checks

IGNORE_INDEX = -100
TEMPLATES = ("chat", "llama2")


def format_llama2(user: str, response: str | None = None, system: str | None = None) -> str:
    """The Llama-2 chat string. Without ``response`` it ends after ``[/INST]`` (a prompt)."""
    checks.string("user", user)
    sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
    text = f"<s>[INST] {sys_block}{user} [/INST]"
    if response is not None:
        text += f" {response} </s>"
    return text


def split_prompt_response(tokenizer, user: str, response: str, system: str | None = None,
                          template: str = "chat") -> tuple[str, str]:
    """The formatted conversation as (prompt text, response text); their concatenation is the
    whole training string, and the prompt ends where the model starts answering."""
    checks.one_of("template", template, TEMPLATES)
    if template == "llama2":
        prompt = format_llama2(user, system=system)
        full = format_llama2(user, response, system=system)
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    return prompt, full[len(prompt):]


def tokenize_for_sft(tokenizer, user: str, response: str, system: str | None = None, template: str = "chat",
                     max_length: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels for one example, loss masked to the response.

    Prompt and response are tokenized separately and concatenated, so the boundary is exact:
    ``labels[i] = -100`` for every prompt token, ``labels[i] = input_ids[i]`` for the response.
    ``max_length`` truncates from the left of the prompt, keeping the whole response.
    """
    prompt, answer = split_prompt_response(tokenizer, user, response, system, template)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if max_length is not None:
        if max_length <= len(response_ids):
            raise ValueError(f"max_length={max_length} leaves no room for the prompt "
                             f"(the response alone has {len(response_ids)} tokens)")
        prompt_ids = prompt_ids[-(max_length - len(response_ids)):]
    ids = prompt_ids + response_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [IGNORE_INDEX] * len(prompt_ids) + list(response_ids)}


def pad_batch(examples: list[dict[str, list[int]]], pad_token_id: int, padding_side: str = "right") -> dict[str, Any]:
    """Pad tokenized examples into tensors (labels padded with -100, attention_mask with 0)."""
    import torch

    checks.non_empty("examples", examples)
    checks.one_of("padding_side", padding_side, ("right", "left"))
    width = max(len(e["input_ids"]) for e in examples)
    out: dict[str, list] = {k: [] for k in examples[0]}
    fills = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    for e in examples:
        for key, seq in e.items():
            pad = [fills.get(key, 0)] * (width - len(seq))
            out[key].append(seq + pad if padding_side == "right" else pad + seq)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
