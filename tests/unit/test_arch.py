"""course_utils.arch against transformers' LLaMA, and the properties of RoPE and GQA."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

from course_utils.arch import (
    MODEL_SHAPES,
    DecoderBlock,
    GroupedQueryAttention,
    RMSNorm,
    SwiGLU,
    TinyLlama,
    TinyLlamaConfig,
    apply_rope,
    apply_rope_complex,
    attention_kind,
    causal_attention,
    causal_attention_reference,
    gradient_norms_by_depth,
    interleaved_to_half_permutation,
    kv_cache_bytes_per_token,
    repeat_kv,
    rope_convention_gap,
    rope_cos_sin,
    rope_scores_by_offset,
)

TOL = 1e-5


def hf_config(num_heads: int, num_kv_heads: int, *, attn: str = "eager", seed: int = 0, tie: bool = False):
    gen = torch.Generator().manual_seed(seed)
    head_dim = 2 * int(torch.randint(2, 7, (1,), generator=gen))
    return LlamaConfig(
        vocab_size=int(torch.randint(50, 120, (1,), generator=gen)), hidden_size=head_dim * num_heads,
        intermediate_size=int(torch.randint(16, 80, (1,), generator=gen)), num_hidden_layers=2,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, max_position_embeddings=64,
        rope_theta=float(torch.randint(100, 20000, (1,), generator=gen)), rms_norm_eps=1e-6,
        tie_word_embeddings=tie, attn_implementation=attn, initializer_range=0.2)


HEADS = [pytest.param(4, 2, id="gqa"), pytest.param(4, 4, id="mha"), pytest.param(6, 1, id="mqa")]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize(("num_heads", "num_kv_heads"), HEADS)
def test_tiny_llama_matches_transformers(num_heads, num_kv_heads, attn):
    torch.manual_seed(0)
    cfg = hf_config(num_heads, num_kv_heads, attn=attn, tie=num_kv_heads == 1)
    hf = LlamaForCausalLM(cfg).eval()
    ours = TinyLlama.from_hf(hf).eval()
    ids = torch.randint(0, cfg.vocab_size, (3, 13))
    with torch.no_grad():
        expected, got = hf(ids).logits, ours(ids)
    assert got.shape == (3, 13, cfg.vocab_size)
    assert (got - expected).abs().max().item() < TOL
    assert ours.num_parameters(exclude_embeddings=False) == hf.num_parameters()
    embedding = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    assert ours.num_parameters(exclude_embeddings=True) == hf.num_parameters() - embedding


def test_tiny_llama_matches_transformers_with_explicit_head_dim():
    torch.manual_seed(9)  # head_dim * num_heads != hidden_size, as in Gemma or Qwen3
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, initializer_range=0.2, attn_implementation="eager")
    hf = LlamaForCausalLM(cfg).eval()
    ours = TinyLlama.from_hf(hf).eval()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL


@pytest.mark.parametrize(("num_heads", "num_kv_heads"), HEADS)
def test_attention_and_block_match_transformers(num_heads, num_kv_heads):
    torch.manual_seed(1)
    cfg = hf_config(num_heads, num_kv_heads, seed=1)
    hf = LlamaForCausalLM(cfg).eval()
    layer = hf.model.layers[0]
    x = torch.randn(2, 9, cfg.hidden_size)
    positions = torch.arange(9)[None].expand(2, 9)
    cos, sin = LlamaRotaryEmbedding(cfg)(x, positions)  # HF's own rotary inputs
    mask = torch.full((9, 9), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        attn_expected, _ = layer.self_attn(x, position_embeddings=(cos, sin), attention_mask=mask)
        block_expected = layer(x, attention_mask=mask, position_embeddings=(cos, sin))
        attn_got = GroupedQueryAttention.from_hf(layer.self_attn)(x, cos, sin)
        block_got = DecoderBlock.from_hf(layer)(x, cos, sin)
        # our own cos/sin are the same numbers as transformers'
        ours_cos, ours_sin = rope_cos_sin(torch.arange(9), cfg.head_dim, cfg.rope_parameters["rope_theta"])
    assert (attn_got - attn_expected).abs().max().item() < TOL
    assert (block_got - block_expected).abs().max().item() < TOL
    assert torch.allclose(ours_cos, cos[0], atol=1e-6) and torch.allclose(ours_sin, sin[0], atol=1e-6)


def test_rmsnorm_and_swiglu_match_transformers():
    torch.manual_seed(2)
    ref = LlamaRMSNorm(16, eps=1e-5)
    ref.weight.data.normal_()
    ours = RMSNorm(16, eps=1e-5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 16) * 7
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    xb = x.bfloat16()
    assert torch.equal(ours.bfloat16()(xb), ref.bfloat16()(xb))
    cfg = hf_config(4, 2, seed=2)
    hf_mlp = LlamaForCausalLM(cfg).model.layers[0].mlp
    mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
    mlp.load_state_dict(hf_mlp.state_dict())
    h = torch.randn(2, 4, cfg.hidden_size)
    assert torch.allclose(mlp(h), hf_mlp(h), atol=1e-6)


@pytest.mark.parametrize("head_dim", [2, 8, 64])
def test_rope_conventions_are_one_rotation_up_to_permutation(head_dim):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 17, head_dim, dtype=torch.float64)
    positions = torch.arange(100, 117)
    assert rope_convention_gap(x, positions) < 1e-12
    # the two layouts give different numbers when applied to the same, unpermuted vector
    cos_h, sin_h = rope_cos_sin(positions, head_dim, convention="half", dtype=x.dtype)
    cos_i, sin_i = rope_cos_sin(positions, head_dim, convention="interleaved", dtype=x.dtype)
    half = apply_rope(x, cos_h, sin_h, convention="half")
    interleaved = apply_rope(x, cos_i, sin_i, convention="interleaved")
    if head_dim > 2:
        assert (half - interleaved).abs().max() > 1e-3
    # interleaved == Meta's complex-number spelling; a rotation keeps the norm
    assert torch.allclose(interleaved, apply_rope_complex(x, positions), atol=1e-5)  # complex path is fp32
    assert torch.allclose(half.norm(dim=-1), x.norm(dim=-1), atol=1e-12)
    perm = interleaved_to_half_permutation(head_dim)
    assert sorted(perm.tolist()) == list(range(head_dim))


def test_syllabus_snippet_is_the_interleaved_convention():
    def syllabus_apply_rotary_pos_emb(q, k, cos, sin):  # verbatim from Chapter 15.2.1
        q_rot = torch.stack([-q[..., 1::2], q[..., ::2]], dim=-1).flatten(-2)
        k_rot = torch.stack([-k[..., 1::2], k[..., ::2]], dim=-1).flatten(-2)
        return q * cos + q_rot * sin, k * cos + k_rot * sin

    torch.manual_seed(4)
    q, k = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    cos, sin = rope_cos_sin(torch.arange(6), 8, convention="interleaved")
    q_s, k_s = syllabus_apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.allclose(q_s, apply_rope(q, cos, sin, convention="interleaved"))
    assert torch.allclose(k_s, apply_rope_complex(k, torch.arange(6)), atol=1e-6)


@pytest.mark.parametrize("convention", ["half", "interleaved"])
def test_rope_scores_depend_only_on_relative_position(convention):
    torch.manual_seed(5)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    scores = rope_scores_by_offset(q, k, torch.arange(40), convention=convention)
    for offset in range(-39, 40):
        diag = scores.diagonal(offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-10), offset
    # and they do depend on the offset (RoPE is not a no-op)
    assert scores.diagonal(0)[0] != pytest.approx(scores.diagonal(-5)[0])
    # shifting both positions by the same amount leaves the score unchanged
    shifted = rope_scores_by_offset(q, k, torch.arange(1000, 1040), convention=convention)
    assert torch.allclose(shifted, scores, atol=1e-9)


def test_gqa_with_as_many_kv_heads_as_heads_is_mha():
    torch.manual_seed(6)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    mha = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(causal_attention(q, k, v), mha, atol=1e-6)
    assert torch.allclose(causal_attention_reference(q, k, v), mha, atol=1e-6)
    # GQA == MHA with each K/V head copied to its group of query heads
    k2, v2 = torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    expanded = torch.nn.functional.scaled_dot_product_attention(
        q, k2.repeat_interleave(2, dim=1), v2.repeat_interleave(2, dim=1), is_causal=True)
    assert torch.allclose(causal_attention(q, k2, v2), expanded, atol=1e-6)
    assert torch.allclose(causal_attention_reference(q, k2, v2), expanded, atol=1e-6)
    assert torch.equal(repeat_kv(k2, 2), k2.repeat_interleave(2, dim=1))
    # causality: the first output ignores everything after the first token
    v3 = v2.clone()
    v3[:, :, 1:] += 1.0
    assert torch.allclose(causal_attention(q, k2, v3)[:, :, 0], causal_attention(q, k2, v2)[:, :, 0])
    assert [attention_kind(8, n) for n in (8, 2, 1)] == ["mha", "gqa", "mqa"]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="head_dim"):
        rope_cos_sin(torch.arange(4), 7)
    with pytest.raises(ValueError, match="head_dim"):
        apply_rope(torch.randn(1, 1, 4, 5), torch.ones(4, 5), torch.ones(4, 5))
    with pytest.raises(ValueError, match="convention"):
        rope_cos_sin(torch.arange(4), 8, convention="sideways")
    with pytest.raises(ValueError, match="num_kv_heads"):
        GroupedQueryAttention(24, 6, 4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        causal_attention(torch.randn(1, 6, 3, 4), torch.randn(1, 4, 3, 4), torch.randn(1, 4, 3, 4))
    with pytest.raises(ValueError, match="num_kv_heads"):
        TinyLlamaConfig(vocab_size=10, hidden_size=24, num_attention_heads=6, num_key_value_heads=4)
    with pytest.raises(ValueError, match="head_dim"):
        TinyLlamaConfig(vocab_size=10, hidden_size=30, num_attention_heads=2)
    model = TinyLlama(TinyLlamaConfig(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=8))
    with pytest.raises(TypeError, match="input_ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="rope_type"):
        cfg = hf_config(2, 2)
        cfg.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
        TinyLlama.from_hf(LlamaForCausalLM(hf_config(2, 2)).eval().__class__(cfg))
    with pytest.raises(ValueError, match="num_kv_heads"):
        kv_cache_bytes_per_token(2, 8, 64, attention="gqa")
    with pytest.raises(ValueError, match="attention"):
        kv_cache_bytes_per_token(2, 8, 64, attention="sparse")


def test_kv_cache_sizes_for_real_models():
    shape = MODEL_SHAPES["LLaMA-2 70B"]
    gqa = kv_cache_bytes_per_token(shape["num_layers"], shape["num_heads"], shape["head_dim"],
                                   num_kv_heads=shape["num_kv_heads"])
    mha = kv_cache_bytes_per_token(shape["num_layers"], shape["num_heads"], shape["head_dim"], attention="mha")
    mqa = kv_cache_bytes_per_token(shape["num_layers"], shape["num_heads"], shape["head_dim"], attention="mqa")
    assert gqa == 2 * 80 * 8 * 128 * 2 == 327_680  # 320 KiB per token in fp16
    assert mha / gqa == 8 and gqa / mqa == 8
    # the cache of a real (tiny) model: K and V of every layer for one token
    cfg = TinyLlamaConfig(vocab_size=10, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          num_hidden_layers=3)
    assert kv_cache_bytes_per_token(3, 4, 8, num_kv_heads=2, bytes_per_value=4) == \
        2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4


def test_tiny_llama_learns_and_ties_weights():
    torch.manual_seed(7)
    cfg = TinyLlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = TinyLlama(cfg)
    assert model.lm_head.weight is model.embed_tokens.weight
    ids = torch.arange(16).repeat(4, 2)[:, :24]  # a periodic sequence a decoder can learn to continue
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_pre_norm_keeps_gradients_bounded_with_depth():
    shallow = {pos: gradient_norms_by_depth(2, pos, batch_size=2, seq_len=8) for pos in ("pre", "post")}
    deep = {pos: gradient_norms_by_depth(12, pos, batch_size=2, seq_len=8) for pos in ("pre", "post")}
    assert len(deep["pre"]) == 12
    # pre-norm: the last layer's gradient shrinks with depth; post-norm: it does not
    assert deep["pre"][-1] < 0.7 * shallow["pre"][-1]
    assert deep["post"][-1] > 0.7 * shallow["post"][-1]
    total = {pos: sum(g * g for g in deep[pos]) ** 0.5 for pos in deep}
    assert total["post"] > total["pre"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_llama_matches_transformers_on_cuda_bf16():
    torch.manual_seed(8)
    cfg = hf_config(4, 2, attn="sdpa")
    hf = LlamaForCausalLM(cfg).eval().cuda()
    ours = TinyLlama.from_hf(hf).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 16), device="cuda")
    with torch.no_grad():
        expected = hf(ids).logits
        # CUDA kernels (fused SDPA, cuBLAS) reorder float32 sums: allow a little more than on CPU
        assert (ours(ids) - expected).abs().max().item() < 1e-4
        hf, ours = hf.bfloat16(), ours.bfloat16()
        diff = (ours(ids).float() - hf(ids).logits.float()).abs().max().item()
        assert diff < 0.05 * expected.abs().max().item()
