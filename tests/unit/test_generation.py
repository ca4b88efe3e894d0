"""course_utils.generation against transformers' logits processors and model.generate."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from course_utils.generation import (
    GenerationResult,
    apply_repetition_penalty,
    apply_temperature,
    generate,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)
from course_utils.runtime import torch_threads

SEEDS = [0, 1, 2]
SHAPES = [(1, 50), (4, 257), (3, 1000)]
DTYPES = [torch.float32, torch.bfloat16]
DUMMY_IDS = torch.zeros((1, 1), dtype=torch.long)


def random_logits(seed: int, shape: tuple[int, int], dtype: torch.dtype, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def dummy_ids(batch: int) -> torch.Tensor:
    return DUMMY_IDS.expand(batch, 1)


# --- equality with the transformers processors -------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_temperature_matches_transformers(seed, shape, dtype):
    z = random_logits(seed, shape, dtype)
    for t in (0.3, 0.7, 1.0, 1.5, 4.0):
        ref = TemperatureLogitsWarper(t)(dummy_ids(shape[0]), z)
        out = apply_temperature(z, t)
        assert out.dtype == dtype and out.shape == z.shape
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_matches_transformers(seed, shape, dtype):
    z = random_logits(seed, shape, dtype)
    for k in (1, 5, 40, shape[-1], shape[-1] + 7):
        ref = TopKLogitsWarper(k)(dummy_ids(shape[0]), z)
        out = top_k_filter(z, k)
        assert out.dtype == dtype
        assert torch.equal(out, ref), f"top_k={k}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_top_p_matches_transformers(seed, shape, dtype):
    z = random_logits(seed, shape, dtype)
    for p in (0.05, 0.3, 0.5, 0.9, 0.99, 1.0):
        for keep in (1, 3):
            ref = TopPLogitsWarper(p, min_tokens_to_keep=keep)(dummy_ids(shape[0]), z)
            out = top_p_filter(z, p, min_tokens_to_keep=keep)
            assert out.dtype == dtype
            assert torch.equal(out, ref), f"top_p={p} min_tokens_to_keep={keep}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_repetition_penalty_matches_transformers(seed, dtype):
    z = random_logits(seed, (3, 300), dtype)
    g = torch.Generator().manual_seed(100 + seed)
    ids = torch.randint(0, 300, (3, 40), generator=g)  # repeats included
    for penalty in (0.7, 1.0, 1.3, 2.0):
        ref = RepetitionPenaltyLogitsProcessor(penalty)(ids, z.clone())
        out = apply_repetition_penalty(z, ids, penalty)
        assert out.dtype == dtype
        assert torch.equal(out, ref), f"penalty={penalty}"


def test_repetition_penalty_lowers_seen_tokens_only():
    z = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = apply_repetition_penalty(z, torch.tensor([0, 1, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]
    # ids beyond the vocabulary are ignored, as in transformers
    assert torch.equal(apply_repetition_penalty(z, torch.tensor([7]), 2.0), z)


def test_one_dimensional_logits_equal_batched_rows():
    z = random_logits(5, (2, 120), torch.float32)
    for row in range(2):
        v = z[row]
        assert torch.equal(top_k_filter(v, 7), top_k_filter(z, 7)[row])
        assert torch.equal(top_p_filter(v, 0.8), top_p_filter(z, 0.8)[row])
        assert torch.equal(apply_temperature(v, 0.5), apply_temperature(z, 0.5)[row])
        ids = torch.tensor([[3, 4, 99], [0, 1, 2]])
        assert torch.equal(apply_repetition_penalty(v, ids[row], 1.5), apply_repetition_penalty(z, ids, 1.5)[row])


def test_inputs_are_not_modified():
    z = random_logits(0, (2, 64), torch.float32)
    before = z.clone()
    top_k_filter(z, 3)
    top_p_filter(z, 0.5)
    top_p_filter(z, 1.0)
    apply_temperature(z, 0.5)
    apply_repetition_penalty(z, torch.tensor([[1, 2], [3, 4]]), 1.5)
    assert torch.equal(z, before)


# --- edge cases ---------------------------------------------------------------------------------

def test_top_p_one_keeps_everything():
    z = random_logits(1, (2, 500), torch.float32)
    out = top_p_filter(z, 1.0)
    assert torch.equal(out, z) and out is not z


def test_top_p_small_keeps_the_argmax():
    z = random_logits(2, (4, 100), torch.float32)
    out = top_p_filter(z, 1e-6)
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1, 1, 1]
    assert torch.equal(out.argmax(-1), z.argmax(-1))


def test_top_p_keeps_smallest_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p=0.8 needs {0.5, 0.3}; top_p=0.81 needs the 0.15 too
    z = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert torch.isfinite(top_p_filter(z, 0.79)).tolist() == [True, True, False, False]
    assert torch.isfinite(top_p_filter(z, 0.81)).tolist() == [True, True, True, False]


def test_top_k_larger_than_vocab_keeps_all():
    z = random_logits(3, (2, 10), torch.float32)
    assert torch.equal(top_k_filter(z, 10), z)
    assert torch.equal(top_k_filter(z, 10_000), z)


def test_top_k_keeps_ties():
    z = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0], [5.0, 4.0, 4.0, 1.0, 4.0]])
    out = top_k_filter(z, 2)
    assert torch.isfinite(out).tolist() == [[False, True, True, True, False], [True, True, True, False, True]]
    assert torch.equal(out, TopKLogitsWarper(2)(dummy_ids(2), z))


def test_top_k_one_is_argmax():
    z = random_logits(4, (3, 77), torch.float32)
    out = top_k_filter(z, 1)
    assert torch.equal(out.argmax(-1), z.argmax(-1))
    assert torch.isfinite(out).sum(-1).tolist() == [1, 1, 1]


def test_custom_filter_value():
    z = torch.tensor([1.0, 2.0, 3.0])
    assert top_k_filter(z, 1, filter_value=-100.0).tolist() == [-100.0, -100.0, 3.0]
    assert top_p_filter(z, 0.01, filter_value=-100.0).tolist() == [-100.0, -100.0, 3.0]


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_temperature_rejected(bad):
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.zeros(5), bad)
    with pytest.raises(ValueError, match="temperature"):
        sample_next_token(torch.zeros(5), temperature=bad)


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_top_k_rejected(bad):
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(5), bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, float("nan")])
def test_bad_top_p_rejected(bad):
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(torch.zeros(5), bad)


def test_bad_penalty_and_min_tokens_rejected():
    with pytest.raises(ValueError, match="penalty"):
        apply_repetition_penalty(torch.zeros(5), torch.tensor([1]), 0.0)
    with pytest.raises(ValueError, match="penalty"):
        apply_repetition_penalty(torch.zeros(5), torch.tensor([1]), -1.0)
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        top_p_filter(torch.zeros(5), 0.5, min_tokens_to_keep=0)
    with pytest.raises(ValueError, match="input_ids"):
        apply_repetition_penalty(torch.zeros(2, 5), torch.tensor([1]), 1.2)
    with pytest.raises(ValueError, match="input_ids"):
        apply_repetition_penalty(torch.zeros(5), torch.tensor([-1]), 1.2)


def test_bad_types_rejected():
    with pytest.raises(TypeError, match="top_k"):
        top_k_filter(torch.zeros(5), 2.5)
    with pytest.raises(TypeError, match="top_k"):
        top_k_filter(torch.zeros(5), True)
    with pytest.raises(TypeError, match="top_p"):
        top_p_filter(torch.zeros(5), "0.9")
    with pytest.raises(TypeError, match="temperature"):
        apply_temperature(torch.zeros(5), None)
    with pytest.raises(TypeError, match="logits"):
        top_k_filter([1.0, 2.0], 1)
    with pytest.raises(TypeError, match="logits"):
        top_p_filter(torch.arange(5), 0.5)
    with pytest.raises(ValueError, match="logits"):
        apply_temperature(torch.zeros(2, 3, 4), 1.0)
    with pytest.raises(TypeError, match="input_ids"):
        apply_repetition_penalty(torch.zeros(5), torch.tensor([1.0]), 1.2)
    with pytest.raises(TypeError, match="do_sample"):
        sample_next_token(torch.zeros(5), do_sample=1)


# --- sampling ------------------------------------------------------------------------------------

def test_greedy_is_argmax_and_keeps_shape():
    z = random_logits(6, (4, 300), torch.float32)
    assert torch.equal(sample_next_token(z, do_sample=False), z.argmax(-1))
    tok = sample_next_token(z[0], do_sample=False)
    assert tok.ndim == 0 and int(tok) == int(z[0].argmax())
    assert sample_next_token(z, generator=torch.Generator().manual_seed(0)).shape == (4,)


def test_seeded_sampling_is_reproducible_and_matches_manual_pipeline():
    z = random_logits(7, (2, 500), torch.float32)
    kw = dict(temperature=0.7, top_k=40, top_p=0.9)
    a = sample_next_token(z, generator=torch.Generator().manual_seed(11), **kw)
    b = sample_next_token(z, generator=torch.Generator().manual_seed(11), **kw)
    assert torch.equal(a, b)
    # the same steps written with the transformers processors and torch.multinomial
    scores = TopPLogitsWarper(0.9)(dummy_ids(2), TopKLogitsWarper(40)(dummy_ids(2), TemperatureLogitsWarper(0.7)(dummy_ids(2), z)))
    ref = torch.multinomial(scores.softmax(-1), 1, generator=torch.Generator().manual_seed(11)).squeeze(1)
    assert torch.equal(a, ref)


def test_sample_frequencies_follow_softmax_over_temperature():
    # 20k draws from a 6-token distribution: empirical frequencies within 4 standard errors of softmax(z/T)
    z = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n = 20_000
    for t in (0.5, 1.0, 2.0):
        probs = torch.softmax(z / t, dim=-1)
        draws = sample_next_token(z.expand(n, 6), temperature=t, generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(draws, minlength=6).float() / n
        stderr = (probs * (1 - probs) / n).sqrt()
        assert torch.all((freq - probs).abs() <= 4 * stderr + 1e-4), (t, freq, probs)
    # lower temperature concentrates mass on the argmax
    hot = sample_next_token(z.expand(n, 6), temperature=2.0, generator=torch.Generator().manual_seed(1))
    cold = sample_next_token(z.expand(n, 6), temperature=0.5, generator=torch.Generator().manual_seed(1))
    assert (cold == 0).float().mean() > (hot == 0).float().mean()


def test_sampling_never_leaves_top_k_or_nucleus():
    z = random_logits(8, (1, 200), torch.float32).expand(5000, 200)
    draws = sample_next_token(z, top_k=5, generator=torch.Generator().manual_seed(0))
    allowed = set(torch.topk(z[0], 5).indices.tolist())
    assert set(draws.tolist()) <= allowed
    draws = sample_next_token(z, top_p=0.5, generator=torch.Generator().manual_seed(0))
    nucleus = set(torch.isfinite(top_p_filter(z[0], 0.5)).nonzero().flatten().tolist())
    assert set(draws.tolist()) <= nucleus and len(nucleus) < 200


# --- generate() against model.generate on the offline SmolLM2 --------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    from course_utils.models import load_causal_lm

    # One intra-op thread: on a shared 2-core CI machine, oversubscribed OpenMP threads make each
    # forward pass several times slower.
    with torch_threads(1):
        yield load_causal_lm("smollm2-135m-instruct", device="cpu")


def _reference(model, prompt_ids: list[int], **kwargs) -> list[int]:
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    return out[0, ids.shape[1]:].tolist()


def test_generate_greedy_matches_transformers_and_stops_at_eos(smollm2):
    model, tok = smollm2
    res = generate(model, tok, "What is the capital of France?", max_new_tokens=12, do_sample=False)
    assert isinstance(res, GenerationResult)
    assert res.prompt_text.startswith("<|im_start|>") and res.prompt_text.endswith("<|im_start|>assistant\n")
    assert res.token_ids == _reference(model, res.prompt_ids, do_sample=False, max_new_tokens=12)
    assert "Paris" in res.text
    assert res.finish_reason == "eos" and res.token_ids[-1] == tok.eos_token_id
    assert tok.eos_token not in res.text


def test_generate_greedy_plain_text_hits_length(smollm2):
    model, tok = smollm2
    res = generate(model, tok, "The three primary colors are", max_new_tokens=6, do_sample=False,
                   use_chat_template=False, repetition_penalty=1.3)
    assert res.prompt_text == "The three primary colors are"
    ref = _reference(model, res.prompt_ids, do_sample=False, max_new_tokens=6, repetition_penalty=1.3)
    assert res.token_ids == ref and len(ref) == 6 and res.finish_reason == "length"


@pytest.mark.parametrize("kwargs", [
    dict(temperature=0.8, top_k=50, top_p=0.9, seed=3),
    dict(temperature=1.4, top_p=0.95, repetition_penalty=1.2, seed=7),
])
def test_seeded_sampling_matches_model_generate(smollm2, kwargs):
    model, tok = smollm2
    kwargs = dict(kwargs)
    seed = kwargs.pop("seed")
    res = generate(model, tok, "Once upon a time", max_new_tokens=6, do_sample=True, seed=seed,
                   use_chat_template=False, **kwargs)
    torch.manual_seed(seed)
    ref_kwargs = {"top_k": 0, "top_p": 1.0, **kwargs}  # 0 / 1.0: transformers' "off" values
    assert res.token_ids == _reference(model, res.prompt_ids, do_sample=True, max_new_tokens=6, **ref_kwargs)
    again = generate(model, tok, "Once upon a time", max_new_tokens=6, do_sample=True, seed=seed,
                     use_chat_template=False, **kwargs)
    assert again.token_ids == res.token_ids


def test_unseeded_sampling_uses_the_global_rng_like_model_generate(smollm2):
    model, tok = smollm2
    torch.manual_seed(21)
    res = generate(model, tok, "Once upon a time", max_new_tokens=4, temperature=0.9, top_p=0.8,
                   use_chat_template=False)
    torch.manual_seed(21)
    ref = _reference(model, res.prompt_ids, do_sample=True, max_new_tokens=4, temperature=0.9, top_k=0, top_p=0.8)
    assert res.token_ids == ref


def test_generate_with_custom_logits_processor(smollm2):
    model, tok = smollm2
    kw = dict(max_new_tokens=5, do_sample=True, seed=5, use_chat_template=False)
    builtin = generate(model, tok, "The weather today", temperature=0.8, top_k=40, **kw)
    custom = generate(model, tok, "The weather today",
                      logits_processor=[lambda ids, z: top_k_filter(apply_temperature(z, 0.8), 40)], **kw)
    assert custom.token_ids == builtin.token_ids
    with pytest.raises(TypeError, match="logits_processor"):
        generate(model, tok, "hi", max_new_tokens=1, logits_processor=[42])


def test_generate_uses_the_kv_cache(smollm2):
    model, tok = smollm2
    lengths = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[-1]))
    try:
        res = generate(model, tok, "Hello there, my name is", max_new_tokens=4, do_sample=False, use_chat_template=False)
    finally:
        hook.remove()
    assert lengths[0] == len(res.prompt_ids)  # one prefill over the prompt...
    assert lengths[1:] == [1] * (len(res.token_ids) - 1)  # ...then one new token per step


def test_generate_rejects_bad_arguments(smollm2):
    model, tok = smollm2
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tok, "hi", max_new_tokens=0)
    with pytest.raises(TypeError, match="prompt"):
        generate(model, tok, 42)
    calls = []
    hook = model.get_input_embeddings().register_forward_hook(lambda *args: calls.append(1))
    try:  # rejected before any forward pass
        with pytest.raises(ValueError, match="temperature"):
            generate(model, tok, "hi", max_new_tokens=1, temperature=0.0)
        with pytest.raises(ValueError, match="top_p"):
            generate(model, tok, "hi", max_new_tokens=1, top_p=1.5)
        with pytest.raises(ValueError, match="repetition_penalty"):
            generate(model, tok, "hi", max_new_tokens=1, repetition_penalty=0.0)
    finally:
        hook.remove()
    assert calls == []
    with pytest.raises(ValueError, match="chat"):
        generate(model, tok, [{"role": "user", "content": "hi"}], use_chat_template=False)


def test_softmax_of_filtered_logits_is_a_distribution():
    z = random_logits(9, (3, 400), torch.float32)
    probs = torch.softmax(top_p_filter(top_k_filter(apply_temperature(z, 0.8), 30), 0.9), -1)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert not math.isnan(probs.sum().item())


# --- CUDA (skipped without a GPU) ------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_filters_on_cuda_match_transformers(dtype):
    z = random_logits(0, (8, 32_000), dtype).cuda()
    ids = torch.randint(0, 32_000, (8, 64), device="cuda")
    for out, ref in [
        (apply_temperature(z, 0.7), TemperatureLogitsWarper(0.7)(ids, z)),
        (top_k_filter(z, 50), TopKLogitsWarper(50)(ids, z)),
        (top_p_filter(z, 0.9), TopPLogitsWarper(0.9)(ids, z)),
        (apply_repetition_penalty(z, ids, 1.3), RepetitionPenaltyLogitsProcessor(1.3)(ids, z.clone())),
    ]:
        assert out.device.type == "cuda" and out.dtype == dtype
        assert torch.equal(out, ref)
    tokens = sample_next_token(z, temperature=0.8, top_k=50, top_p=0.9,
                               generator=torch.Generator(device="cuda").manual_seed(0))
    assert tokens.device.type == "cuda" and tokens.shape == (8,)


@pytest.mark.gpu
def test_generate_greedy_on_cuda_matches_transformers():
    from course_utils.models import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m-instruct", device="cuda")
    res = generate(model, tok, "What is the capital of France?", max_new_tokens=16, do_sample=False)
    ids = torch.tensor([res.prompt_ids], device="cuda")
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16)
    assert res.token_ids == ref[0, ids.shape[1]:].tolist()
    assert "Paris" in res.text
