"""Teaching chain of thought to a small model: LoRA fine-tuning on step-by-step rationales
versus on answers only — the same questions, the same steps, batch size, learning rate,
seed and example order; only the assistant's target differs:

* ``target="rationale"``: ``16 / 2 = 8 ⏎ 8 - 4 = 4 ⏎ The answer is 4.`` (the model learns to
  write each intermediate result, one operation per line, before the answer);
* ``target="answer"``: ``The answer is 4.`` (the model must do all steps "in its head").

The pieces are chapter 05's: :func:`course_utils.alignment.tokenize_for_sft` (loss only on
the response), :func:`course_utils.alignment.apply_lora` and
:func:`course_utils.alignment.train.train_lm`. Note that a rationale has more response
tokens than an answer, so at equal steps the rationale model is trained on more tokens: the
comparison is at equal data and compute steps, not equal tokens.
"""

from __future__ import annotations

from course_utils import checks
from course_utils.alignment import apply_lora, tokenize_for_sft
from course_utils.alignment.train import train_lm
from course_utils.prompting.prompts import SYSTEM, answer_only

TARGETS = ("rationale", "answer")


def sft_examples(tokenizer, rows: list[dict], target: str, system: str | None = SYSTEM,
                 max_length: int = 256) -> list[dict]:
    """Tokenized (question → target) examples with the loss masked to the target."""
    checks.one_of("target", target, TARGETS)
    checks.non_empty("rows", rows)
    return [tokenize_for_sft(tokenizer, r["question"], r["rationale"] if target == "rationale" else answer_only(r),
                             system=system, max_length=max_length) for r in rows]


def finetune_lora(model, tokenizer, rows: list[dict], target: str, *, steps: int, batch_size: int = 8,
                  lr: float = 1e-3, r: int = 16, alpha: float = 32.0,
                  target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"),
                  seed: int = 0, desc: str | None = None) -> list[float]:
    """Wrap ``model`` with LoRA adapters (in place) and train them on ``rows`` with ``target``;
    returns the loss per step."""
    checks.positive_int(steps=steps, batch_size=batch_size, r=r)
    examples = sft_examples(tokenizer, rows, target)
    apply_lora(model, target_modules=target_modules, r=r, alpha=alpha)
    return train_lm(model, examples, steps=steps, batch_size=batch_size, lr=lr, pad_token_id=tokenizer.pad_token_id,
                    seed=seed, desc=desc or f"LoRA on {target}s")
