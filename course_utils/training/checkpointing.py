"""Gradient (activation) checkpointing measured: saved activations, peak memory and step time.

``TinyLlama.gradient_checkpointing_enable(k)`` runs the layers in segments of ``k`` under
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: forward keeps only each segment's
input, and backward runs each segment's forward again to rebuild what it needs. Memory falls from
``L·A`` (``A``: activations of one layer) to ``⌈L/k⌉·B + k·A`` (``B``: one layer's input) at the
price of one extra forward, about a third more compute (forward ≈ 1/3 of forward + backward).
The gradients are the same to the last bit: the recomputation repeats the same operations.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from course_utils import checks
from course_utils.training.memory import checkpointed_activation_bytes, peak_memory, saved_activation_bytes


def measure_checkpointing(config, segment_sizes: Sequence[int | None], *, batch_size: int = 4, seq_len: int = 128,
                          repeats: int = 3, seed: int = 0, device: str = "cpu") -> list[dict[str, Any]]:
    """Train-step measurements of a :class:`TinyLlama` built from ``config`` for each checkpoint
    segment size (``None``: no checkpointing), on the same weights and batch.

    Each row: ``saved_bytes`` (what autograd keeps after forward, counted with saved-tensor hooks,
    parameters excluded), ``peak_bytes`` (high-water mark of tensors allocated during forward +
    backward, :class:`PeakMemory`), ``predicted_saved``/``predicted_peak_activations`` from the
    segment formula with ``A`` and ``B`` fitted on the first two settings measured,
    ``step_seconds`` (median of ``repeats``) and ``grad_max_diff`` against no checkpointing.
    """
    from course_utils.arch import TinyLlama

    checks.positive_int(batch_size=batch_size, seq_len=seq_len, repeats=repeats)
    torch.manual_seed(seed)
    model = TinyLlama(config).to(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=gen).to(device)
    y = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=gen).to(device)
    params = list(model.parameters())

    def loss_fn() -> torch.Tensor:
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def set_segment(k: int | None) -> None:
        if k is None:
            model.gradient_checkpointing_disable()
        else:
            model.gradient_checkpointing_enable(k)

    rows, reference = [], None
    for k in segment_sizes:
        set_segment(k)
        loss, saved = saved_activation_bytes(loss_fn, exclude=params)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in params])
        reference = grads if reference is None else reference
        model.zero_grad(set_to_none=True)
        _, peak = peak_memory(lambda: loss_fn().backward())
        model.zero_grad(set_to_none=True)
        rows.append({"segment": k or 0, "segments": math.ceil(config.num_hidden_layers / k) if k else 0,
                     "saved_bytes": saved, "peak_bytes": peak, "grad_max_diff": (grads - reference).abs().max().item()})
    times: list[list[float]] = [[] for _ in segment_sizes]
    for _ in range(repeats):  # round-robin over the settings, so a busy machine slows them all alike
        for i, k in enumerate(segment_sizes):
            set_segment(k)
            start = time.perf_counter()
            loss_fn().backward()
            times[i].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    for row, t in zip(rows, times):
        row["step_seconds"] = statistics.median(t)
    model.gradient_checkpointing_disable()
    _add_predictions(rows, config.num_hidden_layers, batch_size * seq_len * config.hidden_size * 4)
    return rows


def _add_predictions(rows: list[dict[str, Any]], num_layers: int, boundary: int) -> None:
    """Fit the formula's per-layer ``A`` and the layer-independent rest from the no-checkpoint row
    and the one-segment row (``k = L``), and predict every row's saved bytes."""
    by = {r["segment"]: r for r in rows}
    if 0 not in by or num_layers not in by:
        return
    rest = by[num_layers]["saved_bytes"] - boundary  # outside the layers: embedding, head, logits
    layer = (by[0]["saved_bytes"] - rest) / num_layers
    for r in rows:
        k = r["segment"] or None
        stored = checkpointed_activation_bytes(num_layers, layer, boundary, k)
        if k is not None:
            stored -= min(k, num_layers) * layer  # after forward only the segment inputs are stored
        r["predicted_saved"] = rest + stored
        r["layer_bytes"], r["boundary_bytes"] = layer, boundary
