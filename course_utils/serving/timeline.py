"""Batch-slot timelines: which request occupies which slot of the batch at each step, for the
continuous-batching engine (from its step log) and for static batching (simulated), so a plot
shows where static batching idles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from course_utils import checks

__all__ = ["IDLE", "WASTED", "continuous_slots", "static_slots"]

IDLE = -1  # the slot holds nobody
WASTED = -2  # the slot is held by a request that has already finished (static batching)


def continuous_slots(step_request_ids: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """``(steps, slots)`` array of request indices (or ``IDLE``) from the request ids of each step
    (e.g. ``[s.request_ids for s in engine.steps]``): a request takes the lowest free slot at its
    first step and frees it after its last step. Returns the array and the request order."""
    last = {rid: i for i, ids in enumerate(step_request_ids) for rid in ids}
    order: list[str] = []
    slot_of: dict[str, int] = {}
    free: list[int] = []
    width = 0
    rows = []
    for i, ids in enumerate(step_request_ids):
        for rid in ids:
            if rid not in slot_of:
                if free:
                    slot_of[rid] = free.pop(0)
                else:
                    slot_of[rid] = width
                    width += 1
                order.append(rid)
        rows.append({slot_of[rid]: order.index(rid) for rid in ids})
        for rid in ids:
            if last[rid] == i:
                free.append(slot_of[rid])
                free.sort()
    grid = np.full((len(rows), width), IDLE, dtype=int)
    for i, row in enumerate(rows):
        for slot, req in row.items():
            grid[i, slot] = req
    return grid, order


def static_slots(output_lengths: Sequence[int], batch_size: int) -> np.ndarray:
    """``(steps, batch_size)`` array for static batching: requests run in batches of
    ``batch_size`` in arrival order and each batch decodes until its longest request is done; a
    request finished early keeps its slot (``WASTED``) until the batch ends, and the next batch
    waits for it."""
    checks.positive_int(batch_size=batch_size)
    checks.non_empty("output_lengths", output_lengths)
    rows = []
    for b in range(0, len(output_lengths), batch_size):
        batch = list(output_lengths[b:b + batch_size])
        for t in range(max(batch)):
            row = [b + j if t < n else WASTED for j, n in enumerate(batch)]
            rows.append(row + [IDLE] * (batch_size - len(row)))
    return np.array(rows, dtype=int)
