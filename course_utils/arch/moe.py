"""Sparse mixture-of-experts (MoE) feed-forward layer, Mixtral style (chapter 03, syllabus 15.2.2).

A dense transformer block has one feed-forward network (FFN). An MoE block has ``E`` expert
FFNs and a *router*; each token is sent to only ``k`` of them, so parameters grow with ``E``
while the compute per token grows with ``k``.

For a token ``x`` (a row of ``X`` with ``T`` rows):

* **Router.** ``p = softmax(x W_r^T)`` over the ``E`` experts (computed in float32). Keep the
  ``k`` largest, ``S = topk(p, k)``, and renormalise them so they sum to one (Mixtral):
  ``g_e = p_e / sum_{j in S} p_j`` for ``e`` in ``S``.
* **Experts.** Each expert is a SwiGLU FFN, ``f_e(x) = W_down,e (silu(W_gate,e x) * W_up,e x)``.
  The weights of all experts are stacked in two 3-D parameters, ``gate_up_proj`` of shape
  ``(E, 2 d_ff, d_model)`` (the gate rows first, then the up rows) and ``down_proj`` of shape
  ``(E, d_model, d_ff)``: the same layout as transformers' ``MixtralExperts``.
* **Output.** ``y = sum_{e in S} g_e f_e(x)``.
* **Dispatch.** Instead of masking every token for every expert (:func:`naive_moe_forward`),
  the ``T k`` (token, expert) assignments are sorted by expert id (one stable ``argsort``), so
  each expert owns a contiguous slice; each expert gathers its tokens (``index_select``) and
  runs *one* matmul chain on them (or all experts run in one grouped GEMM,
  ``torch._grouped_mm``), and the weighted results are added back to their tokens with
  ``index_add_``.
* **Load-balancing loss** (Switch Transformer eq. 4-6, as transformers computes it for
  Mixtral): with ``f_e`` the fraction of tokens routed to expert ``e`` (each token counted
  once per slot, so ``sum_e f_e = k``) and ``P_e`` the mean router probability of expert
  ``e``, ``L_aux = E * sum_e f_e P_e``. It equals ``k`` for perfectly uniform routing and
  grows as the load concentrates; gradients flow through ``P_e``.
* **Capacity.** With a capacity factor ``c`` every expert accepts at most
  ``C = ceil(c * T * k / E)`` assignments; first choices are served before second choices
  (GShard priority), earlier tokens before later ones. Assignments over capacity are dropped
  (they contribute zero: in a transformer the residual connection carries the token on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import checks

DispatchMethod = Literal["loop", "grouped_mm"]
_METHODS = ("loop", "grouped_mm")


# --------------------------------------------------------------------------------------------
# Router
# --------------------------------------------------------------------------------------------
class Routing(NamedTuple):
    """The router's decision for ``T`` tokens: ``probs`` (T, E) float32, ``gates`` (T, k)
    float32 renormalised top-k weights, ``experts`` (T, k) int64 expert ids (best first)."""

    probs: torch.Tensor
    gates: torch.Tensor
    experts: torch.Tensor


def top_k_route(router_logits: torch.Tensor, top_k: int) -> Routing:
    """Softmax top-k routing with renormalised gates (Mixtral).

    ``probs = softmax(logits)`` in float32; ``gates, experts = topk(probs, k)``;
    ``gates /= gates.sum(-1)``.

    Args:
        router_logits: (T, E) router scores ``x W_r^T``.
        top_k: experts per token, ``1 <= top_k <= E``.
    """
    checks.tensor("router_logits", router_logits, ndim=2, floating=True, shape="(num_tokens, num_experts)")
    checks.integer("top_k", top_k, low=1, high=router_logits.shape[-1])
    probs = torch.softmax(router_logits.float(), dim=-1)
    gates, experts = torch.topk(probs, top_k, dim=-1)
    gates = gates / gates.sum(dim=-1, keepdim=True)
    return Routing(probs, gates, experts)


def top_k_gates(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's decision without the probabilities: ``(gates, experts)``, each ``(T, k)``
    (see :func:`top_k_route`)."""
    routing = top_k_route(router_logits, top_k)
    return routing.gates, routing.experts


def load_balancing_loss(router_logits: torch.Tensor | Sequence[torch.Tensor], top_k: int,
                        num_experts: int | None = None) -> torch.Tensor:
    """Switch/Mixtral auxiliary loss ``L_aux = E * sum_e f_e P_e``.

    ``f_e`` = (number of top-k assignments to expert ``e``) / T, so ``sum_e f_e = k``;
    ``P_e`` = mean over tokens of ``softmax(logits)_e``. Uniform routing gives ``L_aux = k``.
    Several layers' logits (a list or tuple) are pooled, as transformers'
    ``load_balancing_loss_func`` does. Multiply by a coefficient (Mixtral: 0.02, the
    transformers default 0.001) before adding it to the language-model loss.
    """
    if isinstance(router_logits, (list, tuple)):  # several layers: pool their tokens
        checks.non_empty("router_logits", router_logits)
        router_logits = torch.cat([logits.to(router_logits[0].device) for logits in router_logits])
    checks.tensor("router_logits", router_logits, ndim=2, floating=True, shape="(num_tokens, num_experts)")
    checks.non_empty("router_logits", router_logits)
    n_experts = router_logits.shape[-1]
    if num_experts not in (None, n_experts):
        raise ValueError(f"num_experts={num_experts} but router_logits has {n_experts} columns")
    checks.integer("top_k", top_k, low=1, high=n_experts)
    probs = torch.softmax(router_logits.float(), dim=-1)
    experts = torch.topk(probs, top_k, dim=-1).indices
    return _aux_loss_from(probs, experts)


def _aux_loss_from(probs: torch.Tensor, experts: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    num_tokens, n_experts = probs.shape
    if counts is None:
        counts = torch.bincount(experts.reshape(-1), minlength=n_experts)
    counts = counts.to(probs.dtype)
    tokens_fraction = counts / num_tokens  # f_e, sums to k
    mean_prob = probs.mean(dim=0)  # P_e, sums to 1
    return n_experts * torch.sum(tokens_fraction * mean_prob)


# --------------------------------------------------------------------------------------------
# Dispatch: group the (token, expert) assignments by expert
# --------------------------------------------------------------------------------------------
class ExpertGroups(NamedTuple):
    """Assignments sorted by expert.

    ``token_index`` (N,) and ``slot_index`` (N,): for each kept assignment, in expert order,
    which token and which of its top-k slots it is; ``counts`` (E,): kept assignments per
    expert (expert ``e`` owns rows ``offsets[e-1]:offsets[e]``); ``routed_counts`` (E,):
    assignments before capacity dropping; ``num_dropped``: assignments dropped (int).
    """

    token_index: torch.Tensor
    slot_index: torch.Tensor
    counts: torch.Tensor
    routed_counts: torch.Tensor
    num_dropped: int


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """``C = ceil(capacity_factor * num_tokens * top_k / num_experts)`` (Switch/GShard)."""
    checks.positive_number(capacity_factor=capacity_factor)
    return math.ceil(capacity_factor * num_tokens * top_k / num_experts)


def group_by_expert(experts: torch.Tensor, num_experts: int, capacity: int | None = None) -> ExpertGroups:
    """Sort the ``T k`` assignments of ``experts`` (T, k) by expert id, without a token loop.

    The assignments are flattened slot-major (all first choices, then all second choices, ...)
    and sorted with a *stable* argsort, so inside each expert's group first choices come before
    second choices and earlier tokens before later ones. With ``capacity`` an expert keeps only
    the first ``capacity`` assignments of its group.
    """
    checks.tensor("experts", experts, ndim=2, floating=False, shape="(num_tokens, top_k)")
    num_tokens, top_k = experts.shape
    flat_experts = experts.t().reshape(-1)  # slot-major: position p is token p % T, slot p // T
    order = torch.argsort(flat_experts, stable=True)
    routed_counts = torch.bincount(flat_experts, minlength=num_experts)
    counts = routed_counts
    num_dropped = 0
    if capacity is not None:
        checks.non_negative_int(capacity=capacity)
        group_start = torch.cumsum(routed_counts, 0) - routed_counts
        rank_in_group = torch.arange(order.numel(), device=order.device) - group_start[flat_experts[order]]
        keep = rank_in_group < capacity
        order = order[keep]
        counts = routed_counts.clamp(max=capacity)
        num_dropped = flat_experts.numel() - order.numel()
    return ExpertGroups(order % num_tokens, order // num_tokens, counts, routed_counts, num_dropped)


def _grouped_mm(x: torch.Tensor, weight_t: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``x[rows of group e] @ weight_t[e]`` for every group, in one kernel."""
    grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
    if grouped_mm is None:
        raise RuntimeError(f"torch {torch.__version__} has no grouped_mm; use method='loop'")
    return grouped_mm(x, weight_t, offs=offsets)


def _swiglu(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """One expert: ``h = x W_gu^T`` split into ``gate, up``; ``(silu(gate) * up) W_down^T``."""
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    if torch.is_grad_enabled():
        return F.linear(F.silu(gate) * up, down)
    return F.linear(F.silu(gate, inplace=True).mul_(up), down)  # no autograd: reuse the buffers


def moe_forward(x: torch.Tensor, gates: torch.Tensor, experts: torch.Tensor, gate_up_proj: torch.Tensor,
                down_proj: torch.Tensor, *, capacity: int | None = None,
                method: DispatchMethod = "loop") -> tuple[torch.Tensor, ExpertGroups]:
    """Grouped MoE forward for routed tokens: ``y_t = sum_j gates[t, j] f_{experts[t, j]}(x_t)``.

    After :func:`group_by_expert`, expert ``e`` owns a contiguous slice of the sorted
    assignments. ``method="loop"``: for each expert with rows (a loop over the E experts,
    never over tokens) gather its tokens, run one matmul chain, scale by the gates and
    ``index_add_`` into the output. ``method="grouped_mm"``: gather all tokens in expert order
    and run every expert in one grouped GEMM (``torch.nn.functional.grouped_mm`` /
    ``torch._grouped_mm``, offsets = cumulative counts; on CUDA use bfloat16).

    Args:
        x: (T, d_model) tokens. gates, experts: (T, k) from :func:`top_k_route`.
        gate_up_proj: (E, 2 d_ff, d_model). down_proj: (E, d_model, d_ff).
        capacity: keep at most this many assignments per expert (None: no limit).
    Returns:
        ``(y, groups)``: y (T, d_model) in ``x``'s dtype, and the :class:`ExpertGroups`.
    """
    checks.one_of("method", method, _METHODS)
    groups = group_by_expert(experts, gate_up_proj.shape[0], capacity)
    weights = gates[groups.token_index, groups.slot_index].unsqueeze(-1)  # (N, 1) float32
    y = torch.zeros_like(x)
    if method == "grouped_mm":
        x_sorted = x.index_select(0, groups.token_index)
        offsets = torch.cumsum(groups.counts, 0).to(torch.int32)
        gate, up = _grouped_mm(x_sorted, gate_up_proj.transpose(-2, -1), offsets).chunk(2, dim=-1)
        y_sorted = _grouped_mm(F.silu(gate) * up, down_proj.transpose(-2, -1), offsets)
        return y.index_add_(0, groups.token_index, (y_sorted * weights).to(x.dtype)), groups
    start = 0
    for expert, count in enumerate(groups.counts.tolist()):  # E iterations; one host sync for counts
        if count == 0:
            continue
        rows = slice(start, start + count)
        tokens = groups.token_index[rows]
        y_expert = _swiglu(x.index_select(0, tokens), gate_up_proj[expert], down_proj[expert])
        y.index_add_(0, tokens, (y_expert * weights[rows]).to(x.dtype))
        start += count
    return y, groups


def moe_dispatch(x: torch.Tensor, gates: torch.Tensor, experts: torch.Tensor, gate_up_proj: torch.Tensor,
                 down_proj: torch.Tensor) -> torch.Tensor:
    """``y_t = sum_j gates[t, j] f_{experts[t, j]}(x_t)`` by grouped dispatch, one matmul chain per
    expert that receives tokens: the output of :func:`moe_forward` (no capacity, ``method="loop"``)."""
    return moe_forward(x, gates, experts, gate_up_proj, down_proj)[0]


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------
@dataclass
class MoEOutput:
    """What :class:`MoELayer` returns.

    ``output`` has the input's shape. ``router_logits`` (T, E). ``aux_loss``: the
    load-balancing loss of this call (differentiable). ``tokens_per_expert`` (E,): assignments
    routed to each expert (before capacity). ``dropped_fraction``: dropped assignments /
    (T k), 0.0 without a capacity factor.
    """

    output: torch.Tensor
    router_logits: torch.Tensor
    aux_loss: torch.Tensor
    tokens_per_expert: torch.Tensor
    dropped_fraction: float


class MoELayer(nn.Module):
    """Sparse MoE FFN: softmax top-k router, renormalised gates, SwiGLU experts, grouped dispatch.

    Args:
        d_model: token width. d_ff: each expert's hidden width.
        num_experts: ``E``. top_k: experts per token ``k`` (``1 <= k <= E``).
        capacity_factor: None (no dropping) or ``c > 0``: each expert takes at most
            ``ceil(c T k / E)`` assignments per call; the rest are dropped.
        method: ``"loop"`` (one matmul per expert) or ``"grouped_mm"`` (one grouped GEMM).
        device, dtype: where and how the parameters are created.
    """

    def __init__(self, d_model: int, d_ff: int, num_experts: int, top_k: int,
                 capacity_factor: float | None = None, *, method: DispatchMethod = "loop",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        checks.positive_int(d_model=d_model, d_ff=d_ff, num_experts=num_experts)
        checks.integer("top_k", top_k, low=1, high=num_experts)
        if capacity_factor is not None:
            checks.positive_number(capacity_factor=capacity_factor)
        checks.one_of("method", method, _METHODS)
        self.d_model, self.d_ff, self.num_experts, self.top_k = d_model, d_ff, num_experts, top_k
        self.capacity_factor, self.method = capacity_factor, method
        factory = {"device": device, "dtype": dtype}
        self.router = nn.Linear(d_model, num_experts, bias=False, **factory)
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * d_ff, d_model, **factory))
        self.down_proj = nn.Parameter(torch.empty(num_experts, d_model, d_ff, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert matrix ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), like ``nn.Linear``."""
        with torch.no_grad():
            self.gate_up_proj.uniform_(-self.d_model ** -0.5, self.d_model ** -0.5)
            self.down_proj.uniform_(-self.d_ff ** -0.5, self.d_ff ** -0.5)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_ff={self.d_ff}, num_experts={self.num_experts}, "
                f"top_k={self.top_k}, capacity_factor={self.capacity_factor}, method={self.method!r}")

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        shape = f"(tokens, d_model={self.d_model}) or (batch, seq, d_model={self.d_model})"
        checks.tensor("x", x, ndim=(2, 3, 4), last_dim=self.d_model, floating=True, shape=shape)
        checks.non_empty("x", x)
        return x.reshape(-1, self.d_model)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        """Route, dispatch, combine. ``x`` is (..., d_model); the output has the same shape."""
        tokens = self._flatten(x)
        router_logits = self.router(tokens)
        probs, gates, experts = top_k_route(router_logits, self.top_k)
        capacity = None
        if self.capacity_factor is not None:
            capacity = expert_capacity(tokens.shape[0], self.num_experts, self.top_k, self.capacity_factor)
        y, groups = moe_forward(tokens, gates, experts, self.gate_up_proj, self.down_proj,
                                capacity=capacity, method=self.method)
        return MoEOutput(
            output=y.reshape(x.shape),
            router_logits=router_logits,
            aux_loss=_aux_loss_from(probs, experts, groups.routed_counts),
            tokens_per_expert=groups.routed_counts,
            dropped_fraction=groups.num_dropped / experts.numel(),
        )

    @classmethod
    def from_hf_mixtral(cls, block: nn.Module, **kwargs: Any) -> MoELayer:
        """Copy a transformers ``MixtralSparseMoeBlock`` (v5: fused 3-D experts; v4: a list of
        experts with ``w1``/``w3``/``w2``) into a new layer with the same outputs.

        ``kwargs`` (``capacity_factor``, ``method``) go to the constructor. The router's jitter
        noise (training only, 0 by default) is not reproduced.
        """
        gate = getattr(block, "gate", None)
        experts = getattr(block, "experts", None)
        router_weight = getattr(gate, "weight", None)
        if not isinstance(router_weight, torch.Tensor) or experts is None:
            raise TypeError(f"block must be a transformers MixtralSparseMoeBlock (with .gate and .experts), "
                            f"got {type(block).__name__}")
        if hasattr(experts, "gate_up_proj"):  # transformers >= 5: stacked (E, 2F, D) and (E, D, F)
            gate_up, down = experts.gate_up_proj.detach(), experts.down_proj.detach()
            act = getattr(getattr(experts, "config", None), "hidden_act", "silu")
        else:  # transformers 4: ModuleList of MixtralBlockSparseTop2MLP(w1 gate, w3 up, w2 down)
            gate_up = torch.stack([torch.cat([e.w1.weight, e.w3.weight]) for e in experts]).detach()
            down = torch.stack([e.w2.weight for e in experts]).detach()
            act = "silu" if isinstance(experts[0].act_fn, nn.SiLU) else type(experts[0].act_fn).__name__
        if act not in ("silu", "swish", "SiLUActivation"):
            raise ValueError(f"only SwiGLU (silu) experts are supported, the block uses {act!r}")
        num_experts, two_ff, d_model = gate_up.shape
        layer = cls(d_model, two_ff // 2, num_experts, int(block.top_k), device=gate_up.device,
                    dtype=gate_up.dtype, **kwargs)
        with torch.no_grad():
            layer.router.weight.copy_(router_weight)
            layer.gate_up_proj.copy_(gate_up)
            layer.down_proj.copy_(down)
        return layer


# --------------------------------------------------------------------------------------------
# References: the syllabus's masked loop and a dense "every expert on every token" baseline
# --------------------------------------------------------------------------------------------
def _expert(layer: MoELayer, expert: int, x: torch.Tensor) -> torch.Tensor:
    return _swiglu(x, layer.gate_up_proj[expert], layer.down_proj[expert])


def naive_moe_forward(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """The syllabus's MoE forward (15.2.2): for each top-k slot, for each expert, a boolean
    mask over the tokens. Slow (``k E`` masked passes) but obviously right: the reference
    :class:`MoELayer` must equal (without a capacity factor)."""
    tokens = layer._flatten(x)
    probs = torch.softmax(layer.router(tokens).float(), dim=-1)
    top_gates, top_indices = torch.topk(probs, layer.top_k, dim=-1)
    top_gates = top_gates / top_gates.sum(dim=-1, keepdim=True)
    output = torch.zeros_like(tokens)
    for i in range(layer.top_k):
        expert_idx = top_indices[:, i]
        expert_gate = top_gates[:, i:i + 1]
        for j in range(layer.num_experts):
            mask = expert_idx == j
            if mask.any():
                output[mask] += (_expert(layer, j, tokens[mask]) * expert_gate[mask]).to(output.dtype)
    return output.reshape(x.shape)


def dense_moe_forward(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token (``E/k`` times the work of the sparse layer), weighted by
    the same gates (zero outside the top-k): the same output at the cost of a dense layer with
    ``E`` FFNs. One full-size matmul chain per expert, accumulated into the output."""
    tokens = layer._flatten(x)
    probs, gates, experts = top_k_route(layer.router(tokens), layer.top_k)
    dense_gates = torch.zeros_like(probs).scatter_(1, experts, gates)  # (T, E), float32
    y = torch.zeros_like(tokens)
    for expert in range(layer.num_experts):
        y += (_expert(layer, expert, tokens) * dense_gates[:, expert:expert + 1]).to(y.dtype)
    return y.reshape(x.shape)


# --------------------------------------------------------------------------------------------
# Parameter counting
# --------------------------------------------------------------------------------------------
def moe_transformer_params(*, num_layers: int, d_model: int, d_ff: int, num_experts: int, top_k: int,
                           vocab_size: int, num_heads: int, num_kv_heads: int,
                           tie_embeddings: bool = False) -> dict[str, int]:
    """Total and active (per token) parameters of a Mixtral-style decoder.

    Per layer: attention ``d (d + 2 d_kv) + d d`` with ``d_kv = d * num_kv_heads / num_heads``
    (GQA), router ``d E``, experts ``E * 3 d d_ff``, two RMSNorms ``2 d``. Plus embeddings
    ``V d``, the LM head ``V d`` (unless tied) and the final norm ``d``. Active parameters
    count ``k`` experts per layer instead of ``E``.
    """
    head_dim = d_model // num_heads
    attention = d_model * (num_heads * head_dim) * 2 + d_model * (num_kv_heads * head_dim) * 2
    expert = 3 * d_model * d_ff
    shared_per_layer = attention + d_model * num_experts + 2 * d_model
    embeddings = vocab_size * d_model * (1 if tie_embeddings else 2) + d_model
    total = embeddings + num_layers * (shared_per_layer + num_experts * expert)
    active = embeddings + num_layers * (shared_per_layer + top_k * expert)
    return {"total": total, "active": active, "expert": expert, "attention_per_layer": attention,
            "embeddings": embeddings}
