"""QLoRA with PEFT: the adapter configuration for a LLaMA model, and merging trained adapters.

QLoRA (Dettmers et al., 2023) keeps the pretrained weights frozen in 4-bit NF4
(:func:`course_utils.models.nf4_config`) and trains LoRA adapters in higher precision on top. For
every adapted linear layer PEFT holds ``A`` (r × in) and ``B`` (out × r) and computes

    h = W x + s · B A x,    s = lora_alpha / r.

After training the adapters are *merged* for inference, ``W' = W + s · B A``. Merging into the NF4
weights would quantize ``W'`` again and lose most of what was learnt, so :func:`merge_adapters`
folds them into a full-precision copy of the base model instead.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from course_utils import checks

LLAMA_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(r: int = 64):
    """PEFT's ``LoraConfig`` for QLoRA on a LLaMA-architecture model: rank ``r`` on every linear
    layer of the blocks (attention and MLP, as the QLoRA paper), ``lora_alpha = 2 r`` (so the
    update is scaled by 2), no dropout, no bias, causal-LM task."""
    from peft import LoraConfig

    checks.positive_int(r=r)
    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(LLAMA_LINEAR_LAYERS),
                      bias="none", task_type="CAUSAL_LM")


def merge_adapters(peft_model: nn.Module, base: nn.Module) -> nn.Module:
    """A copy of ``base`` with the LoRA adapters of ``peft_model`` folded into its weights.

    ``peft_model`` holds adapters (PEFT's ``lora_A``/``lora_B`` of its ``"default"`` adapter) on a
    model with ``base``'s architecture, whatever the precision of its frozen weights (NF4 for
    QLoRA). For each adapted layer, the copy's weight becomes ``W + s · B A`` (computed in float32,
    stored in the copy's dtype), with ``s`` the layer's ``scaling``. ``base`` is not modified; the
    copy is returned in eval mode.
    """
    if not isinstance(base, nn.Module) or not isinstance(peft_model, nn.Module):
        raise TypeError("peft_model and base must be torch modules")
    inner = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    adapted = [(name, module) for name, module in inner.named_modules()
               if hasattr(module, "lora_A") and "default" in module.lora_A]
    if not adapted:
        raise ValueError("peft_model has no LoRA adapter named 'default' (wrap it with peft.get_peft_model)")
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for name, module in adapted:
            target = merged.get_submodule(name)
            A = module.lora_A["default"].weight.float()
            B = module.lora_B["default"].weight.float()
            delta = (B @ A) * module.scaling["default"]
            if target.weight.shape != delta.shape:
                raise ValueError(f"{name}: base weight {tuple(target.weight.shape)} does not match the adapter's "
                                 f"update {tuple(delta.shape)}; is base the model the adapters were trained on?")
            target.weight.copy_((target.weight.float() + delta.to(target.weight.device)).to(target.weight.dtype))
    return merged.eval()
