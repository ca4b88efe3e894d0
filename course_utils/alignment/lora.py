"""LoRA from scratch: a frozen linear layer plus a trainable low-rank update.

For a frozen weight ``W`` (out × in), LoRA learns ``A`` (r × in) and ``B`` (out × r) and
computes

    h = W x + b + (α / r) · B A x,

with ``B`` initialised to zero (so training starts from the pretrained model) and ``A`` as
PEFT does (Kaiming-uniform). It trains ``r · (in + out)`` numbers instead of ``in · out``.
``merge()`` folds the update into the weight, ``W ← W + (α / r) B A``, so inference costs
nothing extra; ``unmerge()`` subtracts it again.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from course_utils import checks


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * B(A(dropout(x)))`` with ``base`` frozen.

    Args:
        base: the ``nn.Linear`` to adapt (its parameters are frozen).
        r: rank of the update (> 0).
        alpha: scaling numerator; the update is multiplied by ``alpha / r``.
        dropout: dropout on the input of the low-rank path (training only).
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        checks.instance("base", base, nn.Linear)
        checks.positive_int(r=r)
        checks.positive_number(alpha=alpha)
        checks.probability("dropout", dropout, allow_one=False)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as PEFT's default init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) · B A`` (out × in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        update = (self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T) @ self.lora_B.T
        return out + (update * self.scaling).to(out.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: ``W ← W + (alpha / r) B A``."""
        if self.merged:
            raise RuntimeError("LoRALinear is already merged")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`: ``W ← W − (alpha / r) B A``."""
        if not self.merged:
            raise RuntimeError("LoRALinear is not merged")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, merged={self.merged}"


def apply_lora(model: nn.Module, target_modules: tuple[str, ...] = ("q_proj", "v_proj"), r: int = 8,
               alpha: float = 16.0, dropout: float = 0.0) -> nn.Module:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name ends with one of
    ``target_modules`` in a :class:`LoRALinear` (in place). Returns the model."""
    checks.non_empty("target_modules", target_modules)
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and name.split(".")[-1] in target_modules]
    if not targets:
        raise ValueError(f"no nn.Linear named {target_modules} found in the model")
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(mod, r=r, alpha=alpha, dropout=dropout))
    return model


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every :class:`LoRALinear` and replace it by its (updated) base layer."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, LoRALinear):
            if not mod.merged:
                mod.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, mod.base)
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``trainable`` and ``total`` parameter counts (``numel``; 4-bit packed weights count
    as stored) and their ratio."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Trainable numbers of one LoRA adapter: ``r · (in + out)`` (vs ``in · out`` for full)."""
    checks.positive_int(in_features=in_features, out_features=out_features, r=r)
    return r * (in_features + out_features)
