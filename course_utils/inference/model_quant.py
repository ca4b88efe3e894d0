"""Apply RTN, GPTQ or AWQ to every linear layer of a decoder (LLaMA-style: ``model.model.layers``
with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``), in place, as "fake"
quantization: each weight is replaced by its dequantized value ``ŵ``, so quality can be measured
with the unchanged model code. Embeddings, norms and the (tied) LM head stay in full precision,
as GPTQ and AWQ checkpoints do.

GPTQ and AWQ go **layer by layer**: the calibration sequences are run once up to the first
decoder layer; then each decoder layer's linears are quantized from the inputs that layer sees,
and the layer's outputs become the next layer's inputs (GPTQ: outputs of the already-quantized
layer, so later layers correct earlier errors; AWQ: outputs of the full-precision layer, as
AutoAWQ). Only one layer's activations are held at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from course_utils import checks
from course_utils.inference.awq import awq_search_scale
from course_utils.inference.gptq import gptq_quantize_weight, hessian_from_inputs
from course_utils.inference.intquant import fake_quantize

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def decoder_layers(model) -> nn.ModuleList:
    """The decoder blocks of a LLaMA-style causal LM."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"model must be a LLaMA-style causal LM with model.model.layers, got {type(model).__name__}")
    return layers


def layer_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """The seven linears of one decoder block, by name."""
    return {name: layer.get_submodule(name) for name in LINEARS}


def iter_linears(model) -> Iterator[tuple[str, nn.Linear]]:
    """``(qualified name, linear)`` for every quantizable linear of the decoder."""
    for i, layer in enumerate(decoder_layers(model)):
        for name, linear in layer_linears(layer).items():
            yield f"model.layers.{i}.{name}", linear


@torch.no_grad()
def quantize_model_rtn(model, bits: int = 4, group_size: int | None = 128) -> None:
    """Round-to-nearest zero-point quantization of every decoder linear (in place)."""
    checks.positive_int(bits=bits)
    for _, linear in iter_linears(model):
        granularity = "channel" if group_size is None else "group"
        linear.weight.copy_(fake_quantize(linear.weight, bits, granularity, group_size))


class _Stop(Exception):
    pass


@torch.no_grad()
def capture_first_layer_inputs(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run ``input_ids`` (``(n, seq)``) up to the first decoder layer → ``(hidden, kwargs)``: the
    layer's input hidden states and the keyword arguments the model passes every layer (rotary
    position embeddings, attention mask)."""
    checks.tensor("input_ids", input_ids, ndim=2, floating=False, shape="(n_sequences, seq_len)")
    captured: dict[str, Any] = {}

    def grab(_module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = decoder_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(input_ids=input_ids.to(model.device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    kwargs = captured["kwargs"]
    kwargs["use_cache"] = False
    kwargs.pop("past_key_values", None)
    return captured["hidden"], kwargs


def _run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _record_inputs(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any],
                   modules: dict[str, nn.Module]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``layer`` once → ``(the input each of modules received, by name; the layer's output)``."""
    seen: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_pre_hook(lambda _m, args, key=key: seen.__setitem__(key, args[0]))
               for key, module in modules.items()]
    try:
        out = _run_layer(layer, hidden, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return seen, out


def _layer_count(model, n_layers: int | None) -> int:
    total = len(decoder_layers(model))
    if n_layers is None:
        return total
    checks.positive_int(n_layers=n_layers)
    return min(n_layers, total)


@torch.no_grad()
def quantize_model_gptq(model, calib_ids: torch.Tensor, bits: int = 4, group_size: int | None = 128,
                        act_order: bool = False, block_size: int = 128, damp: float = 0.01,
                        n_layers: int | None = None, progress: bool = True) -> dict[str, float]:
    """GPTQ every decoder linear (in place), layer by layer, from calibration token ids
    ``(n, seq)``. Returns each linear's GPTQ loss by name. ``n_layers`` limits the run to the first
    layers (for quick demos)."""
    from tqdm.auto import tqdm

    hidden, kwargs = capture_first_layer_inputs(model, calib_ids)
    losses: dict[str, float] = {}
    layers = decoder_layers(model)
    for i in tqdm(range(_layer_count(model, n_layers)), desc=f"GPTQ {bits}-bit", disable=not progress):
        layer = layers[i]
        linears = layer_linears(layer)
        inputs, _ = _record_inputs(layer, hidden, kwargs, linears)
        for name, lin in linears.items():
            hessian = hessian_from_inputs(inputs[name])  # 2 X Xᵀ / n
            result = gptq_quantize_weight(lin.weight, hessian, bits, group_size, act_order, block_size, damp)
            lin.weight.copy_(result.weight)
            losses[f"model.layers.{i}.{name}"] = result.loss
        hidden = _run_layer(layer, hidden, kwargs)  # inputs of the next layer, through the quantized layer
    return losses


@torch.no_grad()
def quantize_model_awq(model, calib_ids: torch.Tensor, bits: int = 4, group_size: int = 128, n_grid: int = 20,
                       n_layers: int | None = None, progress: bool = True) -> dict[str, float]:
    """AWQ every decoder block (in place): search the scales of the groups (q,k,v), (gate,up),
    (down) and, when shapes allow, (o), fold ``1/s`` into the producer of each group's input,
    then round every linear to nearest. Returns the chosen ``α`` per group."""
    from tqdm.auto import tqdm

    hidden, kwargs = capture_first_layer_inputs(model, calib_ids)
    alphas: dict[str, float] = {}
    layers = decoder_layers(model)
    for i in tqdm(range(_layer_count(model, n_layers)), desc=f"AWQ {bits}-bit", disable=not progress):
        layer = layers[i]
        attn, mlp = layer.self_attn, layer.mlp
        watch = {"qkv": attn.q_proj, "o": attn.o_proj, "gate_up": mlp.gate_proj, "down": mlp.down_proj}
        inputs, next_hidden = _record_inputs(layer, hidden, kwargs, watch)  # fp outputs feed the next layer
        groups = [("qkv", [attn.q_proj, attn.k_proj, attn.v_proj], layer.input_layernorm.weight, None),
                  ("gate_up", [mlp.gate_proj, mlp.up_proj], layer.post_attention_layernorm.weight, None),
                  ("down", [mlp.down_proj], None, mlp.up_proj)]
        if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
            groups.append(("o", [attn.o_proj], None, attn.v_proj))
        for key, linears, norm_weight, producer in groups:
            s, alpha, _ = awq_search_scale(inputs[key], [lin.weight for lin in linears], bits, group_size, n_grid)
            alphas[f"model.layers.{i}.{key}"] = alpha
            for lin in linears:
                lin.weight.mul_(s.to(lin.weight.dtype))  # W · diag(s)
            if norm_weight is not None:
                norm_weight.div_(s.to(norm_weight.dtype))  # the norm now outputs x / s
            else:
                producer.weight.div_(s.to(producer.weight.dtype)[:, None])  # the producer's rows output x / s
                if producer.bias is not None:
                    producer.bias.div_(s.to(producer.bias.dtype))
        for lin in layer_linears(layer).values():
            lin.weight.copy_(fake_quantize(lin.weight, bits, "group", group_size))
        hidden = next_hidden
    return alphas
