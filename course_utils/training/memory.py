"""Memory accounting for data-parallel training: the ZeRO paper's formulas, and measurement.

**Model states** (Rajbhandari et al., 2020, "ZeRO", §3.1). Training a model of ``Ψ`` parameters
with Adam holds, per parameter:

* fp32 training: parameters 4 B, gradients 4 B, Adam's two moments 8 B → 16 B;
* mixed precision: fp16/bf16 parameters 2 B and gradients 2 B, and ``K = 12`` B of optimizer
  state (an fp32 master copy of the parameters 4 B, momentum 4 B, variance 4 B) → ``(2 + 2 + K)Ψ``.

**ZeRO stages** over ``N`` data-parallel ranks partition these states:

====================  ==================  ==================  =================
stage                 parameters          gradients           optimizer states
====================  ==================  ==================  =================
0 (plain DDP)         ``pΨ``              ``gΨ``              ``KΨ``
1 (P_os)              ``pΨ``              ``gΨ``              ``KΨ/N``
2 (P_os+g)            ``pΨ``              ``gΨ/N``            ``KΨ/N``
3 (P_os+g+p)          ``pΨ/N``            ``gΨ/N``            ``KΨ/N``
====================  ==================  ==================  =================

The paper's Figure 1 (Ψ = 7.5 B, N = 64, mixed precision): 120 GB → 31.4 → 16.6 → 1.9 GB per GPU.

**Activations** of one transformer layer (Korthikanti et al., 2022, "Reducing Activation
Recomputation in Large Transformer Models", eq. 1), in 16-bit with dropout:
``s·b·h·(34 + 5·a·s/h)`` bytes for sequence ``s``, micro-batch ``b``, hidden size ``h`` and ``a``
heads (the ``5·a·s²·b`` term is the attention matrix, gone with FlashAttention). With
checkpointing every ``k`` layers only the segment inputs (``2·s·b·h`` bytes each) are kept and one
segment is recomputed at a time: ``⌈L/k⌉·2sbh + k·A_layer`` at the peak, smallest near ``k = √L``
(Chen et al., 2016, "Training Deep Nets with Sublinear Memory Cost").

Measurement counts bytes from the tensors themselves: :func:`tensor_bytes` sums the storages a set
of tensors lives in (each storage once, a DTensor by its local shard), :func:`saved_activation_bytes`
counts what autograd saves for backward through saved-tensor hooks, and :class:`PeakMemory` follows
every tensor an operator allocates until it is freed (a ``TorchDispatchMode``; any device).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from course_utils import checks

#: Bytes per parameter of (parameters, gradients, optimizer states) with Adam.
PRECISIONS: dict[str, tuple[int, int, int]] = {
    "fp32": (4, 4, 8),  # fp32 weights and grads; Adam's m and v
    "mixed": (2, 2, 12),  # 16-bit weights and grads; fp32 master weights, m and v (K = 12)
}
ZERO_STAGES = (0, 1, 2, 3)
GB = 1e9  # the ZeRO paper's GB


@dataclass(frozen=True)
class ModelStateBytes:
    """Bytes per rank of parameters, gradients and optimizer states."""

    params: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def model_state_bytes(num_params: float, world_size: int = 1, stage: int = 0, precision: str = "mixed") -> ModelStateBytes:
    """Bytes per rank of the model states of ``num_params`` parameters trained with Adam under
    ZeRO ``stage`` over ``world_size`` data-parallel ranks (table in the module docstring)."""
    checks.number("num_params", num_params, low=0)
    checks.positive_int(world_size=world_size)
    checks.one_of("stage", stage, ZERO_STAGES)
    checks.one_of("precision", precision, PRECISIONS)
    p, g, k = PRECISIONS[precision]
    n = world_size
    return ModelStateBytes(params=p * num_params / (n if stage >= 3 else 1),
                           grads=g * num_params / (n if stage >= 2 else 1),
                           optimizer=k * num_params / (n if stage >= 1 else 1))


def zero_table(num_params: float, world_sizes: Iterable[int], precision: str = "mixed") -> list[dict[str, Any]]:
    """One row per world size: GB per rank at each ZeRO stage (the paper's Figure 1 layout)."""
    rows = []
    for n in world_sizes:
        row: dict[str, Any] = {"params_B": num_params / 1e9, "gpus": n}
        for stage in ZERO_STAGES:
            row[f"stage{stage}_GB"] = model_state_bytes(num_params, n, stage, precision).total / GB
        rows.append(row)
    return rows


def activation_bytes_per_layer(seq_len: int, batch_size: int, hidden_size: int, num_heads: int, *,
                               flash_attention: bool = False) -> float:
    """Korthikanti et al.'s activation bytes of one transformer layer in 16-bit:
    ``s·b·h·(34 + 5·a·s/h)``; with ``flash_attention`` the ``5·a·s²·b`` attention-matrix term
    (scores, softmax, its dropout mask) is not stored."""
    checks.positive_int(seq_len=seq_len, batch_size=batch_size, hidden_size=hidden_size, num_heads=num_heads)
    s, b, h, a = seq_len, batch_size, hidden_size, num_heads
    return s * b * h * 34 + (0 if flash_attention else 5 * a * s * s * b)


def checkpointed_activation_bytes(num_layers: int, layer_bytes: float, boundary_bytes: float,
                                  segment_size: int | None) -> float:
    """Peak activation bytes of ``num_layers`` layers when checkpointed in segments of
    ``segment_size`` layers: ``⌈L/k⌉`` stored segment inputs of ``boundary_bytes`` plus one segment
    of ``k`` layers recomputed in backward. ``segment_size=None``: no checkpointing, ``L·layer_bytes``."""
    checks.positive_int(num_layers=num_layers)
    checks.number("layer_bytes", layer_bytes, low=0)
    checks.number("boundary_bytes", boundary_bytes, low=0)
    if segment_size is None:
        return num_layers * layer_bytes
    checks.positive_int(segment_size=segment_size)
    k = min(segment_size, num_layers)
    return math.ceil(num_layers / k) * boundary_bytes + k * layer_bytes


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this rank holds: a DTensor's local shard, any other tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of memory the tensors occupy on this rank: the size of every distinct storage they live
    in, counted once (views and DDP's gradient buckets share storages; a shard's padding counts)."""
    storages: dict[tuple[str, int], int] = {}
    for t in tensors:
        if t is None:
            continue
        checks.instance("tensors[i]", t, torch.Tensor)
        st = local_tensor(t).untyped_storage()
        storages[(str(st.device), st.data_ptr())] = st.nbytes()
    return sum(storages.values())


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor in an optimizer's per-parameter state (Adam: ``exp_avg``, ``exp_avg_sq``, ``step``);
    for ``ZeroRedundancyOptimizer`` the state of the local optimizer, i.e. of this rank's shard."""
    inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer wraps a local optimizer
    return [v for state in inner.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def saved_activation_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> tuple[Any, int]:
    """Run ``fn`` (a forward pass) and count the bytes autograd saves for backward.

    A saved-tensor pack hook sees every tensor an operator saves; each distinct storage counts once
    and the storages of ``exclude`` (the parameters: saved by every linear layer, but not activations)
    are left out. Inside ``torch.utils.checkpoint`` regions the checkpoint's own hook takes over, so
    only the segment inputs it keeps are counted: what really stays in memory. Returns
    ``(fn's result, bytes)``.
    """
    skip = {local_tensor(t).untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensors that operators allocate inside the ``with`` block, on any device.

    Every operator's outputs are followed: a new storage adds its size to ``current`` and a
    finalizer subtracts it when the storage is freed, so ``peak`` is the high-water mark of live
    tensors created in the block (tensors that existed before, such as parameters, are not
    counted). Scratch buffers a kernel allocates internally and frees before returning are not
    operator outputs and are not seen; ``torch.cuda.max_memory_allocated`` sees those on CUDA.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not hasattr(t, "to_local"):
                st = t.untyped_storage()
                key = id(st)
                if key in self._live or st.nbytes() == 0:
                    continue
                self._live[key] = st.nbytes()
                self.current += st.nbytes()
                self.peak = max(self.peak, self.current)
                weakref.finalize(st, self._free, key)
        return out


def peak_memory(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` under :class:`PeakMemory`; return ``(fn's result, peak bytes)``."""
    with PeakMemory() as tracker:
        out = fn()
    return out, tracker.peak
