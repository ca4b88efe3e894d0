"""Mixed precision: bf16 autocast with fp32 master weights, fp16 with loss scaling.

Under ``torch.autocast`` matrix multiplications run in 16 bits while the parameters, and so the
optimizer's update, stay in fp32 ("master weights", Micikevicius et al., 2018). bfloat16 keeps
fp32's 8-bit exponent, so gradients do not underflow; float16 has a 5-bit exponent: magnitudes below
``2⁻²⁴ ≈ 6·10⁻⁸`` round to zero and above 65,504 overflow. Loss scaling multiplies the loss by ``S``
before backward so small gradients land in fp16's range, and divides the fp32 gradients by ``S``
before the step; ``GradScaler`` adapts ``S`` (halve and skip the step on inf/NaN, double after
a run of good steps). :func:`fp16_underflow` measures what scaling saves on real activation gradients.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from course_utils import checks
from course_utils.training.memory import saved_activation_bytes

PRECISION_MODES = ("fp32", "bf16", "fp16")
FP16_SMALLEST = 2.0 ** -24  # smallest positive subnormal float16


def train_steps(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], mode: str = "fp32", *,
                lr: float = 3e-3, device: str = "cpu") -> dict[str, Any]:
    """Train ``model`` (fp32 parameters: the master weights) on ``batches`` under ``mode``.

    ``"bf16"``/``"fp16"`` run forward and backward under ``torch.autocast``; ``"fp16"`` adds a
    ``GradScaler``. Returns the losses, the median step time (after the first), the activation bytes
    saved for backward on the first batch, the final loss scale and the number of skipped steps.
    """
    checks.one_of("mode", mode, PRECISION_MODES)
    checks.non_empty("batches", batches)
    device_type = torch.device(device).type
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    scaler = torch.amp.GradScaler(device_type, enabled=mode == "fp16")
    params = list(model.parameters())

    def forward_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    losses, times, saved, skipped = [], [], 0, 0
    for i, (x, y) in enumerate(batches):
        start = time.perf_counter()
        if i == 0:
            loss, saved = saved_activation_bytes(functools.partial(forward_loss, x, y), exclude=params)
        else:
            loss = forward_loss(x, y)
        scaler.scale(loss).backward()
        scale_before = scaler.get_scale() if mode == "fp16" else 1.0
        scaler.step(opt)
        scaler.update()
        if mode == "fp16" and scaler.get_scale() < scale_before:
            skipped += 1  # inf/NaN gradients: the step was skipped and the scale halved
        opt.zero_grad(set_to_none=True)
        if device_type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return {"mode": mode, "losses": losses, "step_seconds": statistics.median(times[1:] or times),
            "saved_bytes": saved, "final_scale": scaler.get_scale() if mode == "fp16" else None,
            "skipped_steps": skipped}


def activation_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """All the gradients flowing into the outputs of the model's linear layers in an fp32 backward
    (what fp16 backward would have to represent), flattened into one tensor."""
    grads: list[torch.Tensor] = []
    hooks = [m.register_full_backward_hook(lambda mod, gin, gout: grads.append(gout[0].detach().flatten()))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    finally:
        for h in hooks:
            h.remove()
    model.zero_grad(set_to_none=True)
    return torch.cat(grads)


def fp16_underflow(grads: torch.Tensor, scale: float = 1.0) -> dict[str, float]:
    """Fractions of the non-zero ``grads`` that become 0 (underflow) or inf (overflow) when
    ``grads · scale`` is cast to float16."""
    checks.tensor("grads", grads, floating=True)
    checks.positive_number(scale=scale)
    g = grads[grads != 0].double() * scale
    if g.numel() == 0:
        raise ValueError("grads has no non-zero entries")
    half = g.to(torch.float16)
    return {"underflow": (half == 0).double().mean().item(), "overflow": half.isinf().double().mean().item()}
