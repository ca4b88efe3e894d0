"""Small, readable training and evaluation loops for the alignment chapters (CPU friendly).

They use the pieces of this package: :func:`~course_utils.alignment.chat.tokenize_for_sft`
(loss masked to the response), :func:`~course_utils.alignment.losses.sequence_logprobs` and
:func:`~course_utils.alignment.losses.dpo_loss`. TRL's ``SFTTrainer``/``DPOTrainer`` do the
same at scale; these loops keep every step visible and let a lab pass in its own functions.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from course_utils import checks
from course_utils.alignment.chat import IGNORE_INDEX, pad_batch, split_prompt_response, tokenize_for_sft
from course_utils.alignment.data import SYSTEM_PROMPT, prompt_text, score_responses
from course_utils.alignment.losses import chosen_nll, dpo_loss, sequence_logprobs


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def sft_examples(tokenizer, rows: list[dict], template: str = "chat", system: str | None = SYSTEM_PROMPT,
                 max_length: int = 128) -> list[dict]:
    """Tokenize Alpaca rows for SFT (labels −100 on the prompt)."""
    return [tokenize_for_sft(tokenizer, prompt_text(r), r["output"], system=system, template=template,
                             max_length=max_length) for r in rows]


GENERAL_SOURCES = ("topics", "docstrings")


def general_text_examples(tokenizer, n: int = 32, seq_len: int = 64, offset: int = 0,
                          source: str = "topics") -> list[dict]:
    """``n`` windows of ``seq_len`` tokens of Python's own documentation, labels on every token:
    a stand-in for "general text" to measure forgetting, or to mix into training as replay.

    ``source="topics"`` reads the language-reference topics (``pydoc_data``);
    ``source="docstrings"`` the standard library's docstrings
    (:func:`course_utils.text_corpus.stdlib_docstrings`). Measuring forgetting on one and
    replaying the other keeps the replay data out of the measurement.
    """
    from course_utils import text_corpus

    checks.one_of("source", source, GENERAL_SOURCES)
    docs = text_corpus.pydoc_topics() if source == "topics" else text_corpus.stdlib_docstrings()
    text = "\n\n".join(d.text for d in docs)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stride = seq_len * 3  # spread the windows over the corpus
    out = []
    for i in range(n):
        start = (offset + i) * stride
        if start + seq_len > len(ids):
            raise ValueError(f"the corpus has {len(ids)} tokens; n={n}, seq_len={seq_len}, offset={offset} is too much")
        window = ids[start:start + seq_len]
        out.append({"input_ids": window, "attention_mask": [1] * seq_len, "labels": list(window)})
    return out


def train_lm(model, examples: list[dict], steps: int, batch_size: int = 8, lr: float = 2e-4,
             pad_token_id: int = 0, seed: int = 0, desc: str = "train", weight_decay: float = 0.0) -> list[float]:
    """AdamW on the trainable parameters with the masked LM loss; returns the loss per step."""
    checks.non_negative_int(steps=steps)
    checks.positive_int(batch_size=batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = random.Random(seed)
    order: list[int] = []
    device = _device_of(model)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, leave=False):
        if len(order) < batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        idx, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in pad_batch([examples[i] for i in idx], pad_token_id).items()}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def mean_loss(model, examples: list[dict], batch_size: int = 16, pad_token_id: int = 0) -> float:
    """Token-weighted mean cross-entropy over the labelled tokens of ``examples``."""
    device = _device_of(model)
    total, count = 0.0, 0
    model.eval()
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(examples[i:i + batch_size], pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        target = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=IGNORE_INDEX, reduction="sum")
        total += loss.item()
        count += int((target != IGNORE_INDEX).sum())
    return total / count


@torch.no_grad()
def generate_responses(model, tokenizer, prompts: list[str], system: str | None = SYSTEM_PROMPT,
                       template: str = "chat", max_new_tokens: int = 12, batch_size: int = 16,
                       desc: str = "generate") -> list[str]:
    """Greedy responses to user prompts (left-padded batches), decoded without special tokens."""
    device = _device_of(model)
    texts = [split_prompt_response(tokenizer, p, "", system, template)[0] for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    model.eval()
    try:
        for i in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [o.strip() for o in out]


def evaluate_answers(model, tokenizer, rows: list[dict], **kwargs) -> tuple[dict[str, float], list[str]]:
    """Generate for Alpaca (or preference) rows and grade with the rule → (scores, responses)."""
    prompts = [r["prompt"] if "prompt" in r else prompt_text(r) for r in rows]
    responses = generate_responses(model, tokenizer, prompts, **kwargs)
    return score_responses(responses, [r["answer"] for r in rows]), responses


def preference_examples(tokenizer, rows: list[dict], system: str | None = SYSTEM_PROMPT,
                        template: str = "chat") -> list[tuple[dict, dict]]:
    """Tokenize preference rows into (chosen, rejected) SFT-style examples."""
    return [(tokenize_for_sft(tokenizer, r["prompt"], r["chosen"], system=system, template=template),
             tokenize_for_sft(tokenizer, r["prompt"], r["rejected"], system=system, template=template))
            for r in rows]


def batch_logps(model, pairs: list[tuple[dict, dict]], pad_token_id: int,
                logprob_fn: Callable = sequence_logprobs) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of the chosen and rejected halves, in one forward pass."""
    batch = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], pad_token_id)
    batch = {k: v.to(_device_of(model)) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = logprob_fn(logits, batch["input_ids"], batch["labels"] != IGNORE_INDEX)
    return logps[:len(pairs)], logps[len(pairs):]


def train_dpo(policy, reference, pairs: list[tuple[dict, dict]], steps: int, batch_size: int = 8,
              beta: float = 0.1, lr: float = 5e-5, pad_token_id: int = 0, seed: int = 0,
              loss_type: str = "sigmoid", logprob_fn: Callable = sequence_logprobs,
              loss_fn: Callable = dpo_loss, sft_weight: float = 0.0, desc: str = "DPO"
              ) -> dict[str, list[float]]:
    """DPO on preference pairs; returns per-step ``loss`` (the DPO term), ``nll`` (the chosen
    responses' token-mean NLL), ``margin`` (mean chosen − rejected reward), ``accuracy``
    (fraction with chosen reward > rejected) and the two mean rewards.

    The optimised loss is ``mean(DPO) + sft_weight · nll`` — ``sft_weight > 0`` is RPO, TRL's
    ``loss_type=["sigmoid", "sft"]`` (see :mod:`course_utils.alignment.losses`)."""
    checks.number("sft_weight", sft_weight, low=0)
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr)
    rng = random.Random(seed)
    order: list[int] = []
    history: dict[str, list[float]] = {k: [] for k in ("loss", "nll", "margin", "accuracy", "chosen_reward",
                                                      "rejected_reward")}
    reference.eval()
    for _ in tqdm(range(steps), desc=desc, leave=False):
        if len(order) < batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        idx, order = order[:batch_size], order[batch_size:]
        chunk = [pairs[i] for i in idx]
        with torch.no_grad():
            ref_c, ref_r = batch_logps(reference, chunk, pad_token_id, logprob_fn)
        policy.train()
        pol_c, pol_r = batch_logps(policy, chunk, pad_token_id, logprob_fn)
        losses, r_c, r_r = loss_fn(pol_c, pol_r, ref_c, ref_r, beta=beta, loss_type=loss_type)
        counts = torch.tensor([sum(t != IGNORE_INDEX for t in c["labels"][1:]) for c, _ in chunk],
                              device=pol_c.device)
        nll = chosen_nll(pol_c, counts)
        loss = losses.mean()
        (loss + sft_weight * nll if sft_weight else loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history["loss"].append(loss.item())
        history["nll"].append(nll.item())
        history["margin"].append((r_c - r_r).mean().item())
        history["accuracy"].append((r_c > r_r).float().mean().item())
        history["chosen_reward"].append(r_c.mean().item())
        history["rejected_reward"].append(r_r.mean().item())
    policy.eval()
    return history
