"""course_utils.alignment.reversal: the reversal-curse measurement of chapter 05."""

from __future__ import annotations

import pytest
import torch

from course_utils.alignment.reversal import (
    FICTITIOUS_FACTS,
    completion_logprobs,
    fact_examples,
    forward_sentence,
    reversal_scores,
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import offline_model_dir

    return AutoTokenizer.from_pretrained(offline_model_dir())


@pytest.fixture(scope="module")
def tiny(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def test_fact_examples_learn_the_whole_sentence(tokenizer):
    ex = fact_examples(tokenizer, FICTITIOUS_FACTS[:2])
    assert ex[0]["labels"] == ex[0]["input_ids"] and ex[0]["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex[1]["input_ids"][:-1]) == forward_sentence(*FICTITIOUS_FACTS[1])
    with pytest.raises(ValueError, match="facts"):
        fact_examples(tokenizer, [])


def test_completion_logprobs_equal_a_direct_sum_and_ignore_padding(tokenizer, tiny):
    pairs = [("Maribel Quennell is", "the composer of an opera."), ("The sky is", "blue.")]
    got = completion_logprobs(tiny, tokenizer, pairs)
    one_by_one = torch.cat([completion_logprobs(tiny, tokenizer, [p]) for p in pairs])
    torch.testing.assert_close(got, one_by_one, rtol=1e-5, atol=1e-5)
    prompt, completion = pairs[1]
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(" " + completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
    direct = sum(logp[len(p_ids) - 1 + i, t] for i, t in enumerate(c_ids))
    torch.testing.assert_close(got[1], direct, rtol=1e-5, atol=1e-5)


def test_reversal_scores_shape_and_chance(tokenizer, tiny):
    scores = reversal_scores(tiny, tokenizer, FICTITIOUS_FACTS[:3])
    assert set(scores) == {f"{d}_{k}" for d in ("forward", "reverse") for k in ("logprob", "margin", "accuracy")} | {
        "chance"}
    assert scores["chance"] == pytest.approx(1 / 3)
    assert all(0 <= scores[f"{d}_accuracy"] <= 1 for d in ("forward", "reverse"))
    with pytest.raises(ValueError, match="len"):
        reversal_scores(tiny, tokenizer, FICTITIOUS_FACTS[:1])
