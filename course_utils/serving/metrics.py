"""Serving metrics: latency per request, throughput, and how well the KV memory is used.

Per request (times from its arrival):

* **TTFT**, time to first token: ``t_first − t_arrival`` (queueing + prefill);
* **TPOT**, time per output token after the first: ``(t_last − t_first) / (n_out − 1)``
  (what a reader of a stream feels as speed);
* **end-to-end latency**: ``t_last − t_arrival``.

Throughput is generated tokens over wall time. KV utilisation compares the token slots that hold
a token with the slots reserved for them: a paged cache reserves whole blocks (waste ≤ B − 1
slots per sequence); a contiguous cache reserves ``max_model_len`` slots per sequence up front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from course_utils.serving.scheduler import Request

__all__ = ["kv_utilisation", "latency_summary", "percentile", "request_latencies", "reservation_waste"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def request_latencies(request: Request) -> dict[str, float]:
    """TTFT, TPOT and end-to-end latency (seconds) and output length of a finished request."""
    if request.first_token_time is None:
        return {"ttft": float("nan"), "tpot": float("nan"), "e2e": float("nan"), "output_tokens": 0}
    n = len(request.output_ids)
    last = request.token_times[-1] if request.token_times else request.first_token_time
    tpot = (last - request.first_token_time) / (n - 1) if n > 1 else float("nan")
    return {"ttft": request.first_token_time - request.arrival_time, "tpot": tpot,
            "e2e": last - request.arrival_time, "output_tokens": n}


def latency_summary(rows: Sequence[dict[str, float]], wall_time: float) -> dict[str, float]:
    """p50/p95 of TTFT, TPOT and end-to-end latency over ``rows`` (from :func:`request_latencies`
    or a client's own measurements), and output tokens per second over ``wall_time``."""
    out: dict[str, float] = {"requests": len(rows)}
    for key in ("ttft", "tpot", "e2e"):
        values = [r[key] for r in rows if r[key] == r[key]]  # drop NaN
        out[f"{key}_p50"] = percentile(values, 50)
        out[f"{key}_p95"] = percentile(values, 95)
    tokens = sum(r["output_tokens"] for r in rows)
    out["output_tokens"] = tokens
    out["throughput_tok_s"] = tokens / wall_time if wall_time > 0 else float("nan")
    return out


def kv_utilisation(steps: Sequence, block_size: int, max_model_len: int) -> dict[str, float]:
    """Mean over the steps (with at least one running request) of tokens held / slots reserved:
    paged (``used_blocks · block_size``) and contiguous (``running · max_model_len``).

    ``steps`` are the engine's :class:`~course_utils.serving.engine.StepRecord`s. (Blocks kept for
    the prefix cache by finished requests are free, not reserved, so they do not count.)
    """
    paged, contiguous = [], []
    for s in steps:
        if s.num_running and s.used_blocks:
            paged.append(s.tokens_in_cache / (s.used_blocks * block_size))
            contiguous.append(s.tokens_in_cache / (s.num_running * max_model_len))
    return {"paged": float(np.mean(paged)) if paged else float("nan"),
            "contiguous": float(np.mean(contiguous)) if contiguous else float("nan")}


def reservation_waste(lengths: Sequence[int], max_len: int, block_size: int | None = None) -> float:
    """Fraction of reserved KV slots that hold no token, for sequences of the given ``lengths``.

    Contiguous (``block_size=None``): each sequence reserves ``max_len`` slots, waste
    ``1 − Σ n_i / (k · max_len)``. Paged: each reserves ``ceil(n_i / B) · B`` slots, waste
    ``1 − Σ n_i / Σ ceil(n_i / B) · B`` (only the tail of each last block).
    """
    from course_utils import checks

    checks.positive_int(max_len=max_len)
    checks.non_empty("lengths", lengths)
    for n in lengths:
        checks.positive_int(length=n)
        if n > max_len:
            raise ValueError(f"a length {n} exceeds max_len={max_len}")
    used = sum(lengths)
    if block_size is None:
        return 1 - used / (len(lengths) * max_len)
    checks.positive_int(block_size=block_size)
    return 1 - used / sum(-(-n // block_size) * block_size for n in lengths)
