"""Constrained decoding: generation that can only produce text matching a JSON schema, a
regular expression, a list of choices or a Lark grammar, with **llguidance** (the Rust
grammar engine behind guidance, also used by vLLM, SGLang and llama.cpp) on top of
``transformers``' ``generate``.

At every decoding step the grammar engine computes the set ``A_t`` of tokens that keep the
output a prefix of some string in the language, and the logits outside it are set to −∞:

    p'(y_t | y_<t) ∝ p(y_t | y_<t) · 1[y_t ∈ A_t]

so the model still chooses among the legal continuations (its preferences survive), and the
end-of-sequence token is legal only where the output is complete. The output is valid by
construction — 100% schema-valid — though not necessarily *correct*.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from course_utils import checks
from course_utils.prompting.llm import CallCounter, chat_generate

_LL_TOKENIZERS: dict[int, tuple[object, object]] = {}


def ll_tokenizer(tokenizer):
    """llguidance's view of a Hugging Face (fast) tokenizer, built once per tokenizer (~1 s)."""
    import llguidance.hf

    key = id(tokenizer)
    if key not in _LL_TOKENIZERS:
        _LL_TOKENIZERS[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))
    return _LL_TOKENIZERS[key][1]


def grammar(*, schema: dict | str | None = None, regex: str | None = None, choices: Sequence[str] | None = None,
            lark: str | None = None, compact_json: bool = True) -> str:
    """An llguidance grammar from exactly one of: a JSON ``schema`` (a dict, a JSON string or a
    pydantic model class), a ``regex``, a list of literal ``choices``, a ``lark`` grammar.

    ``compact_json`` (the default) allows no free whitespace in JSON (``{"a": 1, "b": 2}``):
    a model cannot then spend its token budget on blank lines and leave the object unfinished.
    Bound strings (``maxLength``), arrays (``maxItems``) and numbers (``maximum``) for the same
    reason: the output is valid only if it finishes within ``max_new_tokens``."""
    import re

    from llguidance import LLMatcher

    given = {k: v for k, v in {"schema": schema, "regex": regex, "choices": choices, "lark": lark}.items()
             if v is not None}
    if len(given) != 1:
        raise ValueError(f"pass exactly one of schema, regex, choices, lark; got {sorted(given) or 'none'}")
    if schema is not None:
        if hasattr(schema, "model_json_schema"):
            schema = schema.model_json_schema()
        options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "} if compact_json else None
        return LLMatcher.grammar_from_json_schema(schema if isinstance(schema, str) else json.dumps(schema),
                                                  defaults=options)
    if regex is not None:
        checks.instance("regex", regex, str)
        return LLMatcher.grammar_from_regex(regex)
    if choices is not None:
        checks.non_empty("choices", choices)
        return LLMatcher.grammar_from_regex("|".join(re.escape(c) for c in choices))
    return LLMatcher.grammar_from_lark(lark)


class GrammarLogitsProcessor(LogitsProcessor):
    """A ``transformers`` logits processor that masks every token the grammar forbids.

    One llguidance matcher per generated row (``grammars`` has one grammar per row, in the
    order ``generate`` lays rows out: each prompt's ``n`` samples next to each other). At each
    step it feeds the row's last sampled token to the matcher, asks for the allowed-token
    bitmask, and sets the other logits to −∞. Rows whose matcher has stopped are made
    to end: their only allowed token is end-of-sequence (llguidance stops a matcher as soon as
    nothing can follow, before the end-of-sequence token is sampled).
    """

    def __init__(self, tokenizer, grammars: Sequence[str]):
        from llguidance import LLMatcher

        checks.non_empty("grammars", grammars)
        self.ll_tok = ll_tokenizer(tokenizer)
        self.matchers = [LLMatcher(self.ll_tok, g) for g in grammars]
        for m in self.matchers:
            if m.is_error():
                raise ValueError(f"invalid grammar: {m.get_error()}")
        eos = tokenizer.eos_token_id
        self.eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self.prompt_len: int | None = None
        self.bitmask = torch.full((len(grammars), (self.ll_tok.vocab_size + 31) // 32), -1, dtype=torch.int32)
        self.bits = torch.arange(32, dtype=torch.int32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        from llguidance.torch import fill_next_token_bitmask

        if input_ids.shape[0] != len(self.matchers):
            raise ValueError(f"the batch has {input_ids.shape[0]} rows but {len(self.matchers)} grammars were given")
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        else:  # the token sampled at the previous step
            for row, m in enumerate(self.matchers):
                if not m.is_stopped():
                    m.consume_token(int(input_ids[row, -1]))
        for row, m in enumerate(self.matchers):
            fill_next_token_bitmask(m, self.bitmask, row)
        allowed = ((self.bitmask.unsqueeze(-1) >> self.bits) & 1).flatten(1).bool()  # (rows, 32·words)
        vocab = scores.shape[-1]
        if allowed.shape[1] < vocab:
            allowed = torch.cat([allowed, allowed.new_zeros(allowed.shape[0], vocab - allowed.shape[1])], dim=1)
        allowed = allowed[:, :vocab].to(scores.device)
        for row, m in enumerate(self.matchers):
            if m.is_stopped():  # the output is complete (or the row has finished): only end-of-sequence
                allowed[row] = False
                allowed[row, self.eos_ids] = True
        return scores.masked_fill(~allowed, float("-inf"))


def constrained_generate(model, tokenizer, conversations: list[list[dict]], grammars: str | Sequence[str], *,
                         max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0, n: int = 1,
                         batch_size: int = 8, counter: CallCounter | None = None,
                         progress: bool = False) -> list[list[str]]:
    """:func:`~course_utils.prompting.llm.chat_generate` under a grammar (from :func:`grammar`):
    one grammar for every conversation, or one per conversation. Returns ``n`` completions
    per conversation; if ``max_new_tokens`` runs out first, an output can be an unfinished
    prefix of a valid one — leave room for the whole structure."""
    per_conv = [grammars] * len(conversations) if isinstance(grammars, str) else list(grammars)
    if len(per_conv) != len(conversations):
        raise ValueError(f"got {len(per_conv)} grammars for {len(conversations)} conversations")
    out: list[list[str]] = []
    for i in range(0, len(conversations), batch_size):
        chunk = per_conv[i:i + batch_size]
        rows = [g for g in chunk for _ in range(n)]
        out += chat_generate(model, tokenizer, conversations[i:i + batch_size], max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, n=n, batch_size=batch_size, counter=counter,
                             logits_processor_factory=lambda _r, rows=rows: GrammarLogitsProcessor(tokenizer, rows))
    return out


def schema_valid(text: str, schema: dict) -> bool:
    """True when ``text`` parses as JSON and validates against ``schema`` (jsonschema)."""
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


def first_json_object(text: str) -> str:
    """The first ``{...}`` block of free text (what one would parse out of an unconstrained
    answer), or the text itself when there is none."""
    start = text.find("{")
    if start < 0:
        return text
    depth = 0
    for i, ch in enumerate(text[start:], start):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return text[start:i + 1]
    return text[start:]
