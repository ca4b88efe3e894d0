"""course_utils.inference: integer quantization vs torch's fake-quantization ops, NF4 vs
bitsandbytes, GGUF Q4_1 vs the gguf package, GPTQ/AWQ properties, perplexity vs transformers'
loss, the memory estimator vs real tensors, KV-cache greedy vs model.generate, speculative
decoding vs the target's greedy output and distribution (and vs transformers' assisted
generation), and the two pitfalls. Tiny random LLaMA models keep it fast; one layer of the real
SmolLM2 where the real weights matter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_utils.inference import (
    LLAMA2,
    ContextLengthError,
    ModelDraft,
    ModelShape,
    NF4Quantized,
    PromptLookupDraft,
    accept_or_resample,
    awq_search_scale,
    batch_vs_alone_logits,
    bits_per_weight,
    check_context,
    dequantize,
    dequantize_nf4,
    dequantize_q4_1,
    dynamic_codebook,
    fake_quantize,
    gguf_requantize,
    gptq_quantize_weight,
    greedy_generate,
    hessian_from_inputs,
    kv_cache_bytes,
    layer_output_error,
    nf4_codebook,
    perplexity,
    quantization_error,
    quantize_absmax,
    quantize_model_awq,
    quantize_model_gptq,
    quantize_model_rtn,
    quantize_nf4,
    quantize_zeropoint,
    read_gguf,
    rule_of_thumb_bytes,
    self_draft,
    shipped_gguf_path,
    speculative_generate,
    training_memory,
    weight_bytes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_llama(seed: int = 0, vocab: int = 64, layers: int = 2, hidden: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the init: peaked, diverse next-token distributions
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(8.0)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


# ---------------------------------------------------------------- integer quantization

def test_absmax_and_zeropoint_equal_torch_fake_quantize():
    """Same scale and zero-point → same values as torch's own fake-quantization ops."""
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    qa = quantize_absmax(w, 8, "channel")
    ref_a = torch.fake_quantize_per_channel_affine(w, qa.scale.squeeze(1), torch.zeros(16, dtype=torch.int32), 0, -127, 127)
    assert torch.equal(dequantize(qa), ref_a)
    qz = quantize_zeropoint(w, 8, "channel")
    ref_z = torch.fake_quantize_per_channel_affine(w, qz.scale.squeeze(1), qz.zero.squeeze(1).int(), 0, 0, 255)
    assert torch.allclose(dequantize(qz), ref_z, atol=1e-6)
    qt = quantize_zeropoint(w, 8, "tensor")
    ref_t = torch.fake_quantize_per_tensor_affine(w, float(qt.scale), int(qt.zero), 0, 255)
    assert torch.allclose(dequantize(qt), ref_t, atol=1e-6)


@pytest.mark.parametrize("quantize", [quantize_absmax, quantize_zeropoint])
@pytest.mark.parametrize("granularity,group", [("tensor", None), ("channel", None), ("group", 32), ("group", 40)])
def test_int_roundtrip_error_is_at_most_half_a_step(quantize, granularity, group):
    w = torch.randn(12, 96, generator=torch.Generator().manual_seed(1)) * 0.05
    qt = quantize(w, 8, granularity, group)
    err = (dequantize(qt) - w).abs()
    step = qt.scale.repeat_interleave(group, dim=1)[:, :96] if granularity == "group" else qt.scale
    assert torch.all(err <= step / 2 + 1e-7)
    assert qt.q.shape == w.shape


def test_granularity_orders_the_error_with_an_outlier():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(2)) * 0.02
    w[3, 7] = 1.0  # one outlier inflates its tensor's, row's or group's scale
    errs = [quantization_error(w, dequantize(quantize_absmax(w, 8, g, s)))["mse"]
            for g, s in [("tensor", None), ("channel", None), ("group", 64)]]
    assert errs[0] > errs[1] > errs[2]


def test_int_edge_cases():
    zeros = torch.zeros(4, 64)
    for quantize in (quantize_absmax, quantize_zeropoint):
        assert torch.equal(dequantize(quantize(zeros, 4, "group", 32)), zeros)
    w = torch.randn(5, 33).to(torch.bfloat16)
    out = fake_quantize(w, 8, "channel", None)
    assert out.dtype == torch.bfloat16 and out.shape == w.shape
    assert torch.allclose(out.float(), w.float(), atol=float(w.float().abs().max()) / 100)
    with pytest.raises(ValueError, match="bits"):
        quantize_absmax(torch.randn(2, 2), bits=1)
    with pytest.raises(ValueError, match="granularity"):
        quantize_absmax(torch.randn(2, 2), granularity="row")
    with pytest.raises(TypeError, match="w"):
        quantize_absmax(torch.ones(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="w"):
        quantize_zeropoint(torch.randn(8))


# ---------------------------------------------------------------- NF4 vs bitsandbytes

def _bnb():
    return pytest.importorskip("bitsandbytes.functional")


def test_nf4_codebooks_equal_bitsandbytes():
    F = _bnb()
    assert torch.equal(nf4_codebook(), F.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(dynamic_codebook(), F.create_dynamic_map(signed=True))
    assert nf4_codebook()[7] == 0 and nf4_codebook()[0] == -1 and nf4_codebook()[15] == 1


@pytest.mark.parametrize("shape,dtype", [((128, 64), torch.float32), ((33, 17), torch.float32),
                                         ((64, 128), torch.bfloat16), ((96, 200), torch.float16)])
def test_nf4_codes_and_absmax_equal_bitsandbytes(shape, dtype):
    """Bit-identical packed codes and block absmaxes (odd sizes, bf16/fp16 input, a zero block)."""
    F = _bnb()
    w = (torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 0.02).to(dtype)
    w.view(-1)[:64] = 0  # an all-zero block
    w.view(-1)[100] = 0.5  # a single outlier
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    ours = quantize_nf4(w, 64, double_quant=False)
    assert torch.equal(ours.packed, packed)
    assert torch.equal(ours.absmax, state.absmax)
    # dequantization: bitsandbytes' reference kernel (its Python code, without torch.compile), exactly
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    reference = _dequantize_4bit_compute.__wrapped__
    ref = reference(packed.reshape(-1), state.absmax, state.code, 64, shape, dtype)
    assert torch.equal(dequantize_nf4(ours), ref)
    if shape[-1] % 64 == 0:  # bitsandbytes' CPU kernel: equal too when rows are whole blocks
        assert torch.equal(dequantize_nf4(ours), F.dequantize_4bit(packed, state))


def test_nf4_double_quantization_matches_bitsandbytes():
    """Offset and second-level scales are identical; the 8-bit absmax codes are the exact nearest
    level and agree with bitsandbytes' CPU kernel on > 99 % of blocks (its binary search picks a
    farther neighbour on a few); dequantizing bitsandbytes' own state gives its exact result."""
    F = _bnb()
    w = torch.randn(576, 1536, generator=torch.Generator().manual_seed(4)) * 0.02
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    ours = quantize_nf4(w, 64, double_quant=True)
    assert torch.equal(ours.packed, packed)
    assert torch.equal(ours.offset, state.offset)
    assert torch.equal(ours.absmax_scale, state.state2.absmax)
    agree = (ours.absmax == state.absmax).float().mean()
    assert agree > 0.99
    code, raw = dynamic_codebook(), quantize_nf4(w, 64, double_quant=False).absmax - state.offset
    scaled = raw / ours.absmax_scale.repeat_interleave(256)[: raw.numel()]
    assert torch.all((code[ours.absmax.long()] - scaled).abs() <= (code[state.absmax.long()] - scaled).abs())
    theirs = NF4Quantized(packed, state.absmax, tuple(w.shape), w.dtype, 64, state.offset, state.state2.absmax)
    assert torch.equal(dequantize_nf4(theirs), F.dequantize_4bit(packed, state))
    assert ours.num_bytes() * 8 / w.numel() == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-3)


def test_nf4_bad_input():
    with pytest.raises(TypeError, match="w"):
        quantize_nf4(torch.ones(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="blocksize"):
        quantize_nf4(torch.randn(4, 4), blocksize=0)


# ---------------------------------------------------------------- GGUF vs gguf

@pytest.fixture(scope="module")
def gguf_pair():
    gguf = pytest.importorskip("gguf")
    path = shipped_gguf_path()
    return read_gguf(path), gguf.GGUFReader(str(path))


def test_gguf_header_and_tensor_table_equal_gguf_reader(gguf_pair):
    ours, reader = gguf_pair
    assert ours.version == 3 and len(ours.tensors) == len(reader.tensors)
    for t in reader.tensors:
        mine = ours.tensors[t.name]
        assert mine.ggml_type == t.tensor_type.name and mine.n_bytes == t.n_bytes
        assert mine.offset == t.data_offset and mine.shape == tuple(int(d) for d in reversed(t.shape))
    assert ours.metadata["llama.block_count"] == 30
    assert ours.metadata["llama.attention.head_count_kv"] == 3
    assert ours.metadata["general.architecture"] == "llama"
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == 49152


def test_q4_1_dequantized_by_hand_equals_gguf_exactly(gguf_pair):
    import gguf

    ours, reader = gguf_pair
    by_name = {t.name: t for t in reader.tensors}
    for name in ("blk.0.attn_k.weight", "blk.29.ffn_down.weight"):
        t = by_name[name]
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        mine = dequantize_q4_1(ours.raw(name), ours.tensors[name].shape)
        assert np.array_equal(mine, ref.reshape(mine.shape))


def test_gguf_requantize_sizes_and_error():
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32) * 0.02
    errors = {}
    for qtype in ("Q8_0", "Q4_0", "Q4_1"):
        w_hat, n_bytes = gguf_requantize(w, qtype)
        assert n_bytes * 8 / w.size == bits_per_weight(qtype)
        errors[qtype] = float(np.abs(w_hat - w).mean())
    assert errors["Q8_0"] < errors["Q4_1"] < errors["Q4_0"]
    with pytest.raises(ValueError, match="qtype"):
        gguf_requantize(w, "Q3_X")


# ---------------------------------------------------------------- GPTQ and AWQ

def _correlated(n=2048, d=256, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) @ (torch.randn(d, d, generator=g) * 0.1) + torch.randn(d, generator=g)
    x[:, :4] *= 20  # a few salient input channels
    return x.double()


def test_gptq_with_identity_hessian_is_round_to_nearest():
    """No correlation between inputs → nothing to compensate: GPTQ reduces to RTN, exactly."""
    w = torch.randn(32, 200, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for group in (64, None):
        r = gptq_quantize_weight(w, torch.eye(200, dtype=torch.float64), 4, group)
        granularity = "group" if group else "channel"
        assert torch.equal(r.weight, fake_quantize(w, 4, granularity, group))


def test_gptq_lazy_batches_and_groups():
    x = _correlated()
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    h = hessian_from_inputs(x).double()
    a = gptq_quantize_weight(w, h, 4, 64, block_size=128)
    b = gptq_quantize_weight(w, h, 4, 64, block_size=16)
    assert torch.allclose(a.weight, b.weight, atol=1e-9)  # lazy batches change nothing but speed
    assert a.scale.shape == (64, 4) and torch.equal(a.g_idx, torch.arange(256) // 64)
    for r in (a, gptq_quantize_weight(w, h, 4, 64, act_order=True)):  # every value sits on its group's grid
        q = torch.round(r.weight / r.scale[:, r.g_idx] + r.zero[:, r.g_idx])
        assert torch.allclose(r.scale[:, r.g_idx] * (q - r.zero[:, r.g_idx]), r.weight, atol=1e-9)
        assert q.min() >= 0 and q.max() <= 15


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_beats_rtn_on_correlated_inputs(bits):
    x = _correlated()
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    h = hessian_from_inputs(x).double()
    rtn = layer_output_error(w, fake_quantize(w, bits, "group", 64), x)
    plain = layer_output_error(w, gptq_quantize_weight(w, h, bits, 64).weight, x)
    ordered = layer_output_error(w, gptq_quantize_weight(w, h, bits, 64, act_order=True).weight, x)
    assert plain < 0.8 * rtn and ordered < 0.8 * rtn


def test_gptq_bad_input():
    with pytest.raises(ValueError, match="hessian"):
        gptq_quantize_weight(torch.randn(4, 8), torch.eye(6))
    with pytest.raises(ValueError, match="weight"):
        gptq_quantize_weight(torch.randn(8), torch.eye(8))


def test_awq_grid_starts_at_rtn_and_never_loses():
    x = _correlated().float()
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(9))
    s, alpha, errors = awq_search_scale(x, [w], 4, 64, n_grid=10)
    rtn = float((x @ fake_quantize(w, 4, "group", 64).T - x @ w.T).pow(2).mean())
    assert errors[0] == pytest.approx(rtn, rel=1e-5)
    assert min(errors) < errors[0] and alpha > 0 and s.shape == (256,)
    with pytest.raises(ValueError, match="input features"):
        awq_search_scale(x, [torch.randn(4, 10)])


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_model_quantization_beats_rtn_on_a_tiny_llama(method):
    from copy import deepcopy

    model = tiny_llama(seed=1, vocab=128, hidden=128)
    calib = torch.randint(0, 128, (8, 64), generator=torch.Generator().manual_seed(0))
    test = torch.randint(0, 128, (4, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(test).logits
    errs = {}
    for name in ("rtn", method):
        m = deepcopy(model)
        if name == "rtn":
            quantize_model_rtn(m, 3, 32)
        elif name == "gptq":
            quantize_model_gptq(m, calib, 3, 32, progress=False)
        else:
            quantize_model_awq(m, calib, 3, 32, n_grid=10, progress=False)
        with torch.no_grad():
            errs[name] = float((m(test).logits - ref).pow(2).mean())
    assert errs[method] < errs["rtn"]


# ---------------------------------------------------------------- perplexity and memory

def test_perplexity_equals_transformers_loss():
    model = tiny_llama(seed=2)
    ids = torch.randint(0, 64, (3 * 32 + 5,), generator=torch.Generator().manual_seed(0))
    ppl = perplexity(model, ids, seq_len=32, batch_size=2)
    windows = ids[: 3 * 32].reshape(3, 32)
    with torch.no_grad():
        loss = model(windows, labels=windows).loss  # mean over the 3 × 31 predicted tokens
    assert ppl == pytest.approx(math.exp(float(loss)), rel=1e-5)
    with pytest.raises(ValueError, match="window"):
        perplexity(model, ids[:10], seq_len=32)


def test_kv_cache_estimate_equals_the_real_cache():
    model = tiny_llama(seed=3)
    shape = ModelShape.from_config(model.config, "tiny")
    ids = torch.randint(1, 64, (2, 10))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    real = sum(layer.keys.numel() * 4 + layer.values.numel() * 4 for layer in cache.layers)
    assert kv_cache_bytes(shape, context=10, batch=2, kv_dtype="fp32") == real


def test_weight_estimate_counts_every_parameter():
    model = tiny_llama(seed=4)
    shape = ModelShape.from_config(model.config)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    assert weight_bytes(shape, "fp32") == sum(p.numel() * 4 for p in model.parameters())
    assert weight_bytes(shape, "fp32") == pytest.approx(model.get_memory_footprint(), rel=1e-3)  # + rotary buffers
    assert weight_bytes(shape, "nf4") < weight_bytes(shape, "int8") < weight_bytes(shape, "bf16")


def test_llama2_table_and_training_rules():
    n7 = LLAMA2["7B"].n_params
    assert 6.6e9 < n7 < 6.8e9 and 68e9 < LLAMA2["70B"].n_params < 70e9
    assert rule_of_thumb_bytes(7e9, "fp16") == 14e9
    full = training_memory(LLAMA2["7B"], "full", batch=1, seq_len=512, checkpointing=True)
    assert full["weights"] + full["gradients"] + full["optimizer"] == 16 * n7
    lora = training_memory(LLAMA2["7B"], "lora", batch=1, seq_len=512)
    qlora = training_memory(LLAMA2["7B"], "qlora", batch=1, seq_len=512)
    assert qlora["total"] < lora["total"] < full["total"] + lora["activations"]
    with pytest.raises(ValueError, match="method"):
        training_memory(LLAMA2["7B"], "adapter")


# ---------------------------------------------------------------- KV cache and speculative decoding

def test_greedy_with_and_without_cache_equals_generate():
    model = tiny_llama(seed=5)
    prompt = torch.randint(1, 64, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.generate(prompt, do_sample=False, max_new_tokens=20)[0, 7:].tolist()
    assert greedy_generate(model, prompt, 20, use_cache=True) == ref
    assert greedy_generate(model, prompt, 20, use_cache=False) == ref
    assert greedy_generate(model, prompt[0], 5, eos_token_ids={ref[2]}) == ref[:3]  # stops at EOS
    with pytest.raises(ValueError, match="one non-empty sequence"):
        greedy_generate(model, torch.ones(2, 3, dtype=torch.long), 4)


def test_greedy_equals_generate_on_smollm2():
    from course_utils.models import load_causal_lm

    model, tokenizer = load_causal_lm(device="cpu")
    ids = tokenizer("def fibonacci(n):", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model.generate(ids, do_sample=False, max_new_tokens=8)[0, ids.shape[1]:].tolist()
    assert greedy_generate(model, ids, 8) == ref


def _drafts(target):
    return {"prompt lookup": PromptLookupDraft(3), "self-draft": ModelDraft(self_draft(target, 1)),
            "other model": ModelDraft(tiny_llama(seed=11))}


def test_speculative_greedy_equals_target_greedy():
    target = tiny_llama(seed=6)
    prompt = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])
    ref = greedy_generate(target, prompt, 24)
    for name, draft in _drafts(target).items():
        for k in (1, 4):
            out = speculative_generate(target, draft, prompt, 24, k=k)
            assert out.tokens == ref, name
            assert out.target_calls <= len(ref) and out.accepted <= out.drafted


def test_speculative_greedy_equals_transformers_assisted_generation():
    target = tiny_llama(seed=7)
    prompt = torch.tensor([[3, 9, 4, 3, 9, 4, 3, 9]])
    with torch.no_grad():
        lookup = target.generate(prompt, do_sample=False, max_new_tokens=16, prompt_lookup_num_tokens=4)
        assisted = target.generate(prompt, do_sample=False, max_new_tokens=16, assistant_model=tiny_llama(seed=12))
    ours = speculative_generate(target, PromptLookupDraft(3), prompt, 16, k=4).tokens
    assert ours == lookup[0, 8:].tolist() == assisted[0, 8:].tolist()


def test_leviathan_rule_gives_the_target_distribution():
    """One step of the accept/resample rule, many draws: the emitted token ~ p, for a model draft
    (token ~ q) and for a deterministic draft (q one-hot)."""
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    q = torch.tensor([0.1, 0.6, 0.1, 0.2])
    n = 4000
    for draft_q in (q, None):
        counts = torch.zeros(4)
        for _ in range(n):
            token = int(torch.multinomial(q, 1, generator=g)) if draft_q is not None else 1
            _, out = accept_or_resample(p, draft_q, token, float(torch.rand((), generator=g)), g)
            counts[out] += 1
        chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
        assert chi2 < 16.3  # 3 degrees of freedom, p-value 0.001


def test_speculative_sampling_matches_the_target_distribution():
    """Two new tokens sampled many times with a mismatched model draft: chi-square test of the
    pair frequencies against the target's exact distribution (enumerated); drafting from q alone
    is rejected by the same test."""
    from scipy.stats import chisquare

    vocab = 6
    target, drafter = tiny_llama(seed=8, vocab=vocab, hidden=32), tiny_llama(seed=9, vocab=vocab, hidden=32)
    prompt = torch.tensor([[1, 2, 3]])

    def pair_probs(model):
        with torch.no_grad():
            p1 = torch.softmax(model(prompt).logits[0, -1], -1)
            seqs = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], 1)
            p2 = torch.softmax(model(seqs).logits[:, -1], -1)
        return (p1[:, None] * p2).reshape(-1).double()

    expected = pair_probs(target)
    g = torch.Generator().manual_seed(1)
    draft = ModelDraft(drafter, generator=g)
    n = 800
    counts = torch.zeros(vocab * vocab, dtype=torch.float64)
    for _ in range(n):
        out = speculative_generate(target, draft, prompt, 2, k=2, do_sample=True, generator=g, eos_token_ids=set())
        counts[out.tokens[0] * vocab + out.tokens[1]] += 1

    def pvalue(probs):  # chi-square, pairs expected fewer than 5 times pooled into one bin
        expect = n * probs / probs.sum()
        small = expect < 5
        obs = torch.cat([counts[~small], counts[small].sum(0, keepdim=True)]).numpy()
        exp = torch.cat([expect[~small], expect[small].sum(0, keepdim=True)]).numpy()
        return chisquare(obs, exp).pvalue

    assert pvalue(expected) > 1e-3
    assert pvalue(pair_probs(drafter)) < 1e-6  # the test can tell a wrong distribution


def test_prompt_lookup_proposals():
    draft = PromptLookupDraft(max_ngram=2)
    assert draft.propose([1, 2, 3, 4, 9, 1, 2], 3)[0] == [3, 4, 9]
    assert draft.propose([1, 2, 3], 3)[0] == []
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookupDraft(max_ngram=1, min_ngram=2)


def test_self_draft_shares_the_targets_weights():
    target = tiny_llama(seed=10, layers=3)
    draft = self_draft(target, 1)
    assert draft.model.layers[0] is target.model.layers[0] and draft.lm_head is target.lm_head
    assert len(draft.model.layers) == 1
    with pytest.raises(ValueError, match="n_layers"):
        self_draft(target, 3)


# ---------------------------------------------------------------- pitfalls

class _WordTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


def test_check_context_refuses_with_a_clear_error():
    tok = _WordTokenizer()
    assert len(check_context(tok, "a b c", 5, 8)) == 3
    with pytest.raises(ContextLengthError, match="exceed the context window of 8 by 2"):
        check_context(tok, "a b c d e", 5, 8)


def test_batch_vs_alone_reports_a_difference():
    from transformers import AutoTokenizer

    from course_utils.models import offline_model_dir

    tokenizer = AutoTokenizer.from_pretrained(offline_model_dir())
    model = tiny_llama(seed=13, vocab=len(tokenizer), hidden=32)
    out = batch_vs_alone_logits(model, tokenizer, "x = 1", ["a much longer filler sentence that pads the batch"])
    assert set(out) == {"max_abs_diff", "same_argmax", "top2_gap"} and out["max_abs_diff"] >= 0
