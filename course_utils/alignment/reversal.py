"""The reversal curse (Berglund et al., 2023): a causal LM fine-tuned on "A is B" does not learn
"B is A".

The facts are fictitious ``(name, description)`` pairs, so the model cannot know them before
training. It is fine-tuned on the forward sentences ``"<name> is <description>."`` only. Each
direction is then scored with the summed log-probability of a completion given a prompt:

* forward: ``log p(description_i | "<name_i> is")``,
* reverse: ``log p(name_i | "<Description_i> is")``.

A score alone says little (long completions have low log-probabilities), so each is compared with
the same prompt completed by the *other* facts' descriptions or names:

    margin_i = log p(right completion | prompt_i) − mean_{j ≠ i} log p(completion_j | prompt_i)

and ``accuracy`` is the fraction of facts whose right completion scores highest of all ``n``
(chance: ``1/n``). The curse: after training the forward margin is large while the reverse margin
stays near 0: the right name is no likelier than any other name of the set.
"""

from __future__ import annotations

import torch

from course_utils import checks
from course_utils.alignment.chat import IGNORE_INDEX, pad_batch
from course_utils.alignment.losses import sequence_logprobs

# Invented people and works: no pretraining text links them.
FICTITIOUS_FACTS: tuple[tuple[str, str], ...] = (
    ("Maribel Quennell", "the composer of the opera The Salt Lanterns"),
    ("Tobias Ardenwick", "the architect of the Velmora Tidal Bridge"),
    ("Isolde Farrowgate", "the author of the novel Ninefold Harbour"),
    ("Cassius Pembrook", "the founder of the Oskarth Glass Museum"),
    ("Leontine Vashburn", "the director of the film Copper Meridian"),
    ("Aurelio Thistlecombe", "the inventor of the Dunmere tide clock"),
    ("Ottilie Brackenhurst", "the painter of the mural River of Quiet Bells"),
    ("Fennimore Caldwrath", "the captain of the research ship Halcyon Drift"),
    ("Rosalind Umberfield", "the discoverer of the comet Tarrow-Ilse"),
    ("Ignatius Merrowdale", "the designer of the typeface Larkspur Grotesk"),
    ("Perpetua Oakhaven", "the conductor of the Wendmoor Night Orchestra"),
    ("Barnaby Quillfeather", "the translator of the Eskarran Chronicles"),
)


def forward_sentence(name: str, description: str) -> str:
    """The training sentence: ``"<name> is <description>."``."""
    return f"{name} is {description}."


def _reverse_prompt(description: str) -> str:
    return f"{description[0].upper()}{description[1:]} is"


def fact_examples(tokenizer, facts=FICTITIOUS_FACTS) -> list[dict[str, list[int]]]:
    """Language-modelling examples of the forward sentences (every token learnt, EOS appended)."""
    checks.non_empty("facts", facts)
    out = []
    for name, description in facts:
        ids = tokenizer(forward_sentence(name, description), add_special_tokens=False)["input_ids"]
        ids = ids + [tokenizer.eos_token_id]
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return out


@torch.no_grad()
def completion_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 64) -> torch.Tensor:
    """``log p(completion | prompt)`` summed over the completion's tokens, for each ``(prompt,
    completion)`` pair (the completion is tokenized after a space, separately from the prompt, so
    the boundary is exact). Returns a float32 ``(len(pairs),)`` tensor."""
    checks.non_empty("pairs", pairs)
    examples = []
    for prompt, completion in pairs:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(" " + completion, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + completion_ids
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids})
    device = next(model.parameters()).device
    scores = []
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(examples[i:i + batch_size], tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        scores.append(sequence_logprobs(logits, batch["input_ids"], batch["labels"] != IGNORE_INDEX).float().cpu())
    return torch.cat(scores)


def _direction(model, tokenizer, prompts: list[str], completions: list[str]) -> dict[str, float]:
    n = len(prompts)
    scores = completion_logprobs(model, tokenizer, [(p, c) for p in prompts for c in completions]).view(n, n)
    right = scores.diagonal()
    others = (scores.sum(dim=1) - right) / (n - 1)
    return {"logprob": right.mean().item(), "margin": (right - others).mean().item(),
            "accuracy": (scores.argmax(dim=1) == torch.arange(n)).float().mean().item()}


def reversal_scores(model, tokenizer, facts=FICTITIOUS_FACTS) -> dict[str, float]:
    """Forward and reverse ``logprob`` (mean over facts), ``margin`` and ``accuracy`` (see the
    module doc), as ``forward_*`` and ``reverse_*`` keys, plus ``chance`` = ``1/n``."""
    checks.integer("len(facts)", len(facts), low=2)
    names = [name for name, _ in facts]
    descriptions = [description for _, description in facts]
    forward = _direction(model, tokenizer, [f"{name} is" for name in names], [d + "." for d in descriptions])
    reverse = _direction(model, tokenizer, [_reverse_prompt(d) for d in descriptions], [n + "." for n in names])
    return {**{f"forward_{k}": v for k, v in forward.items()}, **{f"reverse_{k}": v for k, v in reverse.items()},
            "chance": 1 / len(facts)}
