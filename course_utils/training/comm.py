"""Count the collectives a training step runs: kind, calls and bytes, on any backend.

Every ``torch.distributed`` collective, whether Python calls it (``ZeroRedundancyOptimizer``,
FSDP2) or C++ does (DDP's reducer), goes through a ``c10d`` operator of the dispatcher.
:class:`CommCounter` is a ``TorchDispatchMode`` that sees those operators and records, per kind,
the size ``B`` of the full buffer each collective works on:

* all-reduce: the tensor reduced (``B``), which a ring runs as a reduce-scatter plus an all-gather;
* all-gather: the gathered output; reduce-scatter: the input being reduced; broadcast: the tensor.

The ZeRO paper's communication *volume* counts an all-reduce as ``2B`` and the others as ``B``, so
plain data parallelism moves ``2Ψ`` per step, ZeRO-3 ``3Ψ`` (all-gather in forward, again in
backward, and a reduce-scatter of the gradients). A ring implementation sends ``(N−1)/N`` of that
volume from each rank (:func:`ring_bytes_sent`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from course_utils import checks

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "other")
#: How many times its buffer a collective counts in the ZeRO paper's volume.
VOLUME_FACTOR = {"all_reduce": 2, "all_gather": 1, "reduce_scatter": 1, "broadcast": 1, "other": 1}


def _nbytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(t) for t in x)
    return 0


def classify(op_name: str, args: tuple) -> tuple[str, int] | None:
    """``(kind, buffer bytes)`` of a dispatcher operator, or ``None`` for an operator that is not a
    collective. ``op_name`` is the overload's name, e.g. ``"c10d._allgather_base_.default"``."""
    ns, _, rest = op_name.partition(".")
    if ns not in ("c10d", "_c10d_functional"):
        return None
    name = rest.split(".")[0].strip("_")
    if name in ("allreduce", "allreduce_coalesced", "all_reduce", "all_reduce_coalesced"):
        return "all_reduce", _nbytes(args[0])
    if name == "broadcast":
        return "broadcast", _nbytes(args[0])
    if name in ("allgather_base", "allgather", "allgather_into_tensor_coalesced"):
        return "all_gather", _nbytes(args[0])  # the outputs
    if name in ("all_gather_into_tensor", "all_gather_into_tensor_coalesced"):
        return "all_gather", _nbytes(args[0]) * int(args[1])  # functional: input × group size
    if name in ("reduce_scatter_base", "reduce_scatter", "reduce_scatter_tensor_coalesced"):
        return "reduce_scatter", _nbytes(args[1])  # the inputs
    if name in ("reduce_scatter_tensor",):
        return "reduce_scatter", _nbytes(args[0])
    if name in ("wait_tensor", "barrier", "monitored_barrier"):
        return None
    return "other", _nbytes(args[0]) if args else 0


class CommCounter(TorchDispatchMode):
    """``with CommCounter() as comm: step()`` records every collective of the block.

    ``comm.calls[kind]`` and ``comm.bytes[kind]`` count calls and buffer bytes;
    :meth:`volume` is the ZeRO paper's communication volume in bytes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        found = classify(str(func), args)
        if found is not None:
            kind, nbytes = found
            self.calls[kind] += 1
            self.bytes[kind] += nbytes
        return func(*args, **(kwargs or {}))

    def volume(self) -> int:
        """``Σ VOLUME_FACTOR[kind] · bytes[kind]``: all-reduce counts twice."""
        return sum(VOLUME_FACTOR[k] * b for k, b in self.bytes.items())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"calls": dict(self.calls), "bytes": dict(self.bytes)}


def ring_bytes_sent(volume: float, world_size: int) -> float:
    """Bytes each rank sends for a communication ``volume`` with ring collectives: ``(N−1)/N`` of it."""
    checks.number("volume", volume, low=0)
    checks.positive_int(world_size=world_size)
    return volume * (world_size - 1) / world_size
