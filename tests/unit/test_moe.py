"""course_utils.arch.moe against the syllabus's masked loop and transformers' Mixtral block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import (
    MixtralExperts,
    MixtralSparseMoeBlock,
    MixtralTopKRouter,
    load_balancing_loss_func,
)

from course_utils.arch.moe import (
    MoELayer,
    dense_moe_forward,
    expert_capacity,
    group_by_expert,
    load_balancing_loss,
    moe_dispatch,
    moe_forward,
    moe_transformer_params,
    naive_moe_forward,
    top_k_gates,
    top_k_route,
)

HAS_GROUPED_MM = hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")


def _hf_block(d_model=32, d_ff=48, num_experts=6, top_k=2, seed=0):
    torch.manual_seed(seed)
    config = MixtralConfig(hidden_size=d_model, intermediate_size=d_ff, num_local_experts=num_experts,
                           num_experts_per_tok=top_k)
    config._experts_implementation = "eager"
    block = MixtralSparseMoeBlock(config).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.2)
    return block


@pytest.mark.parametrize("num_experts,top_k", [(4, 1), (6, 2), (8, 3), (5, 5)])
@pytest.mark.parametrize("shape", [(1, 16), (7, 16), (2, 9, 16)])
def test_layer_equals_naive_loop_and_dense(num_experts, top_k, shape):
    torch.manual_seed(1)
    layer = MoELayer(16, 24, num_experts, top_k, dtype=torch.float64)
    x = torch.randn(*shape, dtype=torch.float64)
    out = layer(x)
    assert out.output.shape == x.shape
    torch.testing.assert_close(out.output, naive_moe_forward(layer, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.output, dense_moe_forward(layer, x), rtol=0, atol=1e-12)
    assert int(out.tokens_per_expert.sum()) == x.numel() // 16 * top_k
    assert out.dropped_fraction == 0.0


def test_gradients_equal_naive_loop():
    torch.manual_seed(2)
    layer = MoELayer(16, 24, 6, 2, dtype=torch.float64)
    x = torch.randn(11, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randn(11, 16, dtype=torch.float64)
    grads = []
    for forward in (lambda: layer(x).output, lambda: naive_moe_forward(layer, x)):
        layer.zero_grad()
        x.grad = None
        ((forward() - target) ** 2).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for fast, slow in zip(*grads):
        torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_tokens", [1, 3, 64])
@pytest.mark.parametrize("method", ["loop", pytest.param("grouped_mm", marks=pytest.mark.skipif(
    not HAS_GROUPED_MM, reason="torch has no grouped_mm"))])
def test_matches_transformers_mixtral_block(num_tokens, method):
    block = _hf_block(num_experts=6, top_k=2, seed=num_tokens)
    layer = MoELayer.from_hf_mixtral(block, method=method)
    assert (layer.d_model, layer.d_ff, layer.num_experts, layer.top_k) == (32, 48, 6, 2)
    torch.manual_seed(10 + num_tokens)
    x = torch.randn(1, num_tokens, 32)
    with torch.no_grad():
        expected = block(x)
        out = layer(x)
        router_logits = block.gate(x)[0]
    torch.testing.assert_close(out.output, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.router_logits, router_logits, rtol=0, atol=1e-6)
    hf_aux = load_balancing_loss_func((router_logits,), num_experts=6, top_k=2)
    torch.testing.assert_close(out.aux_loss, hf_aux, rtol=1e-6, atol=1e-6)


def test_matches_transformers_batched_input_and_other_config():
    block = _hf_block(d_model=24, d_ff=40, num_experts=8, top_k=3, seed=5)
    layer = MoELayer.from_hf_mixtral(block)
    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        torch.testing.assert_close(layer(x).output, block(x), rtol=0, atol=1e-5)


def test_aux_loss_matches_transformers_over_several_layers():
    torch.manual_seed(3)
    layers = tuple(torch.randn(40, 8) * 2 for _ in range(3))
    expected = load_balancing_loss_func(layers, num_experts=8, top_k=2)
    torch.testing.assert_close(load_balancing_loss(layers, top_k=2), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(load_balancing_loss(list(layers), top_k=2, num_experts=8), expected)


def test_aux_loss_uniform_is_top_k_and_collapse_is_larger():
    balanced = torch.eye(4).repeat(8, 1) * 5.0  # every expert first choice of 8 tokens
    loss_balanced = load_balancing_loss(balanced, top_k=1)
    collapsed = torch.zeros(32, 4)
    collapsed[:, 0] = 5.0
    loss_collapsed = load_balancing_loss(collapsed, top_k=1)
    assert abs(loss_balanced.item() - 1.0) < 1e-6
    assert loss_collapsed.item() > 3.5  # -> E as the collapse becomes total


def test_aux_loss_gradient_reaches_router():
    layer = MoELayer(8, 16, 4, 2)
    layer(torch.randn(10, 8)).aux_loss.backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0


def test_expert_that_receives_no_token():
    block = _hf_block(d_model=16, d_ff=24, num_experts=4, top_k=2)
    with torch.no_grad():  # on positive inputs experts 0 and 1 always win; 2 and 3 get nothing
        block.gate.weight.copy_(torch.tensor([3.0, 2.0, 1.0, -1.0])[:, None].expand(4, 16))
    layer = MoELayer.from_hf_mixtral(block)
    x = torch.rand(1, 9, 16) + 0.1
    out = layer(x)
    assert out.tokens_per_expert.tolist() == [9, 9, 0, 0]
    with torch.no_grad():
        torch.testing.assert_close(out.output, block(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.output, naive_moe_forward(layer, x))
    out.output.sum().backward()
    assert torch.isfinite(layer.gate_up_proj.grad).all()
    assert layer.gate_up_proj.grad[2:].abs().sum() == 0 and layer.gate_up_proj.grad[:2].abs().sum() > 0


def test_group_by_expert_is_sorted_and_stable():
    experts = torch.tensor([[2, 0], [2, 1], [0, 2]])
    groups = group_by_expert(experts, num_experts=4)
    # slot-major order: first choices (tokens 0,1,2) then second choices; stable inside an expert
    assert groups.counts.tolist() == [2, 1, 3, 0]
    assert list(zip(groups.token_index.tolist(), groups.slot_index.tolist())) == [
        (2, 0), (0, 1), (1, 1), (0, 0), (1, 0), (2, 1)]
    assert (experts[groups.token_index, groups.slot_index] == torch.tensor([0, 0, 1, 2, 2, 2])).all()


def _reference_capacity_drops(experts: torch.Tensor, num_experts: int, capacity: int) -> set[tuple[int, int]]:
    """Plain-Python GShard priority: all first choices in token order, then second choices."""
    used = [0] * num_experts
    dropped = set()
    for slot in range(experts.shape[1]):
        for token in range(experts.shape[0]):
            e = int(experts[token, slot])
            if used[e] < capacity:
                used[e] += 1
            else:
                dropped.add((token, slot))
    return dropped


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.25])
def test_capacity_factor_drops_the_right_assignments(capacity_factor):
    torch.manual_seed(4)
    num_tokens, num_experts, top_k = 24, 4, 2
    layer = MoELayer(16, 24, num_experts, top_k, capacity_factor=capacity_factor, dtype=torch.float64)
    with torch.no_grad():  # skew the router so some experts overflow
        layer.router.weight[0] += 0.5
    x = torch.randn(num_tokens, 16, dtype=torch.float64)
    out = layer(x)
    capacity = expert_capacity(num_tokens, num_experts, top_k, capacity_factor)
    assert capacity == -(-capacity_factor * num_tokens * top_k // num_experts)
    routing = top_k_route(layer.router(x), top_k)
    dropped = _reference_capacity_drops(routing.experts, num_experts, capacity)
    assert out.dropped_fraction == pytest.approx(len(dropped) / (num_tokens * top_k))
    if capacity_factor < 1:
        assert out.dropped_fraction > 0
    # output: sum over the kept assignments only
    expected = torch.zeros_like(x)
    for t in range(num_tokens):
        for j in range(top_k):
            if (t, j) not in dropped:
                e = int(routing.experts[t, j])
                gate, up = F.linear(x[t], layer.gate_up_proj[e]).chunk(2)
                expected[t] += routing.gates[t, j] * F.linear(F.silu(gate) * up, layer.down_proj[e])
    torch.testing.assert_close(out.output, expected, rtol=0, atol=1e-12)
    assert out.tokens_per_expert.tolist() == torch.bincount(routing.experts.reshape(-1), minlength=4).tolist()


def test_large_capacity_changes_nothing():
    torch.manual_seed(5)
    layer = MoELayer(16, 24, 4, 2, capacity_factor=4.0)
    x = torch.randn(10, 16)
    out = layer(x)
    assert out.dropped_fraction == 0.0
    torch.testing.assert_close(out.output, naive_moe_forward(layer, x))


def test_moe_forward_functional_with_given_assignments():
    torch.manual_seed(6)
    layer = MoELayer(8, 12, 3, 2, dtype=torch.float64)
    x = torch.randn(4, 8, dtype=torch.float64)
    experts = torch.tensor([[0, 1], [0, 1], [1, 0], [0, 1]])  # expert 2 gets nothing
    gates = torch.full((4, 2), 0.5, dtype=torch.float64)
    y, groups = moe_forward(x, gates, experts, layer.gate_up_proj, layer.down_proj)
    assert groups.counts.tolist() == [4, 4, 0]
    expected = torch.stack([sum(0.5 * _dense_expert(layer, e, x[t]) for e in experts[t].tolist())
                            for t in range(4)])
    torch.testing.assert_close(y, expected)


def _dense_expert(layer, e, x):
    gate, up = F.linear(x, layer.gate_up_proj[e]).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, layer.down_proj[e])


def test_top_k_route_gates_are_renormalised():
    logits = torch.randn(5, 7)
    probs, gates, experts = top_k_route(logits, 3)
    torch.testing.assert_close(gates.sum(-1), torch.ones(5))
    torch.testing.assert_close(probs, torch.softmax(logits, -1))
    assert (experts == logits.topk(3).indices).all()


@pytest.mark.parametrize("num_tokens,num_experts,top_k", [(1, 4, 2), (13, 8, 2), (20, 6, 3), (9, 5, 5)])
def test_top_k_gates_and_moe_dispatch_equal_transformers_router_and_experts(num_tokens, num_experts, top_k):
    """The two functions lab02 asks for, against the pieces of transformers' Mixtral block."""
    block = _hf_block(d_model=16, d_ff=24, num_experts=num_experts, top_k=top_k, seed=num_tokens)
    assert isinstance(block.gate, MixtralTopKRouter) and isinstance(block.experts, MixtralExperts)
    x = torch.randn(num_tokens, 16, generator=torch.Generator().manual_seed(num_tokens))
    with torch.no_grad():
        logits, hf_gates, hf_experts = block.gate(x)
        gates, experts = top_k_gates(logits, top_k)
        torch.testing.assert_close(gates, hf_gates)
        assert torch.equal(experts, hf_experts)
        y = moe_dispatch(x, gates, experts, block.experts.gate_up_proj, block.experts.down_proj)
        torch.testing.assert_close(y, block.experts(x, hf_experts, hf_gates), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="top_k"):
        top_k_gates(logits, num_experts + 1)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="top_k"):
        MoELayer(8, 16, num_experts=4, top_k=5)
    with pytest.raises(ValueError, match="top_k"):
        MoELayer(8, 16, num_experts=4, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        top_k_route(torch.randn(3, 4), 5)
    with pytest.raises(ValueError, match="top_k"):
        load_balancing_loss(torch.randn(3, 4), top_k=6)
    with pytest.raises(ValueError, match="router_logits"):
        top_k_route(torch.randn(2, 3, 4), 2)
    with pytest.raises(ValueError, match="capacity_factor"):
        MoELayer(8, 16, 4, 2, capacity_factor=0)
    with pytest.raises(ValueError, match="method"):
        MoELayer(8, 16, 4, 2, method="fast")
    with pytest.raises(ValueError, match="d_model"):
        MoELayer(0, 16, 4, 2)
    layer = MoELayer(8, 16, 4, 2)
    with pytest.raises(ValueError, match="d_model=8"):
        layer(torch.randn(3, 9))
    with pytest.raises(ValueError, match="d_model=8"):
        layer(torch.randn(8))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="x must not be empty"):
        layer(torch.randn(0, 8))
    with pytest.raises(TypeError, match="MixtralSparseMoeBlock"):
        MoELayer.from_hf_mixtral(torch.nn.Linear(3, 3))


def test_mixtral_8x7b_parameter_counts_match_transformers():
    config = MixtralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
                           num_experts_per_tok=2)
    from transformers import MixtralForCausalLM
    with torch.device("meta"):
        model = MixtralForCausalLM(config)
    counts = moe_transformer_params(num_layers=32, d_model=4096, d_ff=14336, num_experts=8, top_k=2,
                                    vocab_size=32000, num_heads=32, num_kv_heads=8)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    expert_params = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert counts["active"] == counts["total"] - expert_params * 6 // 8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_mm_bf16_on_cuda_matches_loop():
    torch.manual_seed(7)
    layer = MoELayer(64, 128, 8, 2, device="cuda", dtype=torch.bfloat16)
    grouped = MoELayer(64, 128, 8, 2, method="grouped_mm", device="cuda", dtype=torch.bfloat16)
    grouped.load_state_dict(layer.state_dict())
    x = torch.randn(256, 64, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(grouped(x).output, layer(x).output, rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="torch has no grouped_mm")
@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_grouped_mm_equals_loop_on_cpu(capacity_factor):
    torch.manual_seed(8)
    loop = MoELayer(16, 24, 8, 2, capacity_factor=capacity_factor)
    grouped = MoELayer(16, 24, 8, 2, capacity_factor=capacity_factor, method="grouped_mm")
    grouped.load_state_dict(loop.state_dict())
    x = torch.randn(37, 16)
    a, b = loop(x), grouped(x)
    torch.testing.assert_close(b.output, a.output, rtol=1e-5, atol=1e-6)
    assert a.dropped_fraction == b.dropped_fraction
