"""Workloads and the baselines a serving engine is measured against (used by the notebook and by
``scripts/bench_serving.py``).

* :func:`make_workload`: mixed-length prompts cut from the offline Python docs, with long-tailed
  output lengths (a lognormal clipped to a range: most answers short, a few long, as in chat
  traffic), generated with ``ignore_eos`` so every system produces exactly the same number of tokens.
* :func:`run_hf_sequential`: transformers ``generate`` one request at a time.
* :func:`run_hf_static`: static batching: ``generate`` on left-padded batches; every batch runs
  until its longest request is done (``max_new_tokens`` = the batch maximum), and a new batch
  starts only when the previous one has finished.
* :func:`run_engine`: the continuous-batching engine with every request queued at time 0.

Each returns the wall time and the useful output tokens (the requested lengths), so throughput
ratios compare the same work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from course_utils import checks

__all__ = ["WorkItem", "make_workload", "run_engine", "run_hf_sequential", "run_hf_static", "shared_prefix_prompts"]


@dataclass(frozen=True)
class WorkItem:
    """One request of a workload: prompt token ids and the exact number of tokens to generate."""

    prompt_ids: tuple[int, ...]
    max_tokens: int


def _corpus_ids(tokenizer, min_tokens: int) -> list[int]:
    from course_utils.text_corpus import pydoc_topics

    ids: list[int] = []
    for doc in pydoc_topics():
        ids.extend(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        if len(ids) >= min_tokens:
            break
    return ids


def make_workload(tokenizer, n: int = 64, *, prompt_len: tuple[int, int] = (16, 256),
                  output_len: tuple[int, int] = (4, 128), output_median: float = 16.0, output_sigma: float = 1.0,
                  seed: int = 0) -> list[WorkItem]:
    """``n`` requests: prompt lengths uniform in ``prompt_len`` (token windows of the Python docs),
    output lengths ``round(median · exp(σ·z))``, ``z ~ N(0, 1)``, clipped to ``output_len``."""
    checks.positive_int(n=n)
    checks.positive_number(output_median=output_median, output_sigma=output_sigma)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(prompt_len[0], prompt_len[1] + 1, size=n)
    outputs = np.clip(np.round(output_median * np.exp(output_sigma * rng.standard_normal(n))), *output_len)
    ids = _corpus_ids(tokenizer, int(lengths.max()) * 4)
    starts = rng.integers(0, len(ids) - int(lengths.max()), size=n)
    return [WorkItem(tuple(ids[s:s + int(m)]), int(o)) for s, m, o in zip(starts, lengths, outputs)]


def shared_prefix_prompts(tokenizer, system_tokens: int = 300, n: int = 8, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` chat conversations that share one system prompt of about ``system_tokens`` tokens
    (documentation text) and differ in a short user question."""
    ids = _corpus_ids(tokenizer, system_tokens + 10)
    system = "Answer from this documentation.\n" + tokenizer.decode(ids[:system_tokens])
    topics = ["lambda", "assert", "global", "yield", "with", "del", "pass", "break", "class", "import", "try", "for"]
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(topics))
    return [[{"role": "system", "content": system},
             {"role": "user", "content": f"In one sentence, what does `{topics[picks[i % len(topics)]]}` do?"}]
            for i in range(n)]


@torch.inference_mode()
def run_hf_sequential(model, workload: list[WorkItem], *, progress: bool = False) -> dict[str, float]:
    """transformers ``generate``, one request at a time (greedy, exactly ``max_tokens`` tokens each)."""
    from tqdm.auto import tqdm

    device = model.device
    start = time.perf_counter()
    for item in tqdm(workload, desc="HF one at a time", disable=not progress):
        ids = torch.tensor([item.prompt_ids], device=device)
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=item.max_tokens,
                       min_new_tokens=item.max_tokens, do_sample=False, pad_token_id=model.config.eos_token_id)
    wall = time.perf_counter() - start
    tokens = sum(w.max_tokens for w in workload)
    return {"wall_s": wall, "output_tokens": tokens, "throughput_tok_s": tokens / wall}


@torch.inference_mode()
def run_hf_static(model, workload: list[WorkItem], batch_size: int = 16, *, pad_token_id: int = 0,
                  progress: bool = False) -> dict[str, float]:
    """Static batching: ``generate`` on left-padded batches of ``batch_size`` in arrival order; each
    batch decodes ``max(max_tokens)`` of its requests, the shorter ones' extra tokens are wasted."""
    from tqdm.auto import tqdm

    checks.positive_int(batch_size=batch_size)
    device = model.device
    start = time.perf_counter()
    computed = 0
    for b in tqdm(range(0, len(workload), batch_size), desc="HF static batches", disable=not progress):
        batch = workload[b:b + batch_size]
        width = max(len(w.prompt_ids) for w in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, w in enumerate(batch):
            ids[i, width - len(w.prompt_ids):] = torch.tensor(w.prompt_ids)
            mask[i, width - len(w.prompt_ids):] = 1
        steps = max(w.max_tokens for w in batch)
        model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=steps, min_new_tokens=steps,
                       do_sample=False, pad_token_id=pad_token_id)
        computed += steps * len(batch)
    wall = time.perf_counter() - start
    tokens = sum(w.max_tokens for w in workload)
    return {"wall_s": wall, "output_tokens": tokens, "throughput_tok_s": tokens / wall,
            "decoded_slots": computed, "wasted_fraction": 1 - tokens / computed}


def run_engine(engine, workload: list[WorkItem], *, progress: bool = False) -> dict[str, float]:
    """The continuous-batching engine, every request queued at time 0 (greedy, ``ignore_eos``)."""
    from course_utils.serving.metrics import kv_utilisation, latency_summary, request_latencies
    from course_utils.serving.scheduler import SamplingParams

    first_step = len(engine.steps)
    start = time.perf_counter()
    requests = [engine.add_request(list(w.prompt_ids), SamplingParams(max_tokens=w.max_tokens, ignore_eos=True))
                for w in workload]
    engine.run_until_done(progress=progress)
    wall = time.perf_counter() - start
    summary = latency_summary([request_latencies(r) for r in requests], wall)
    util = kv_utilisation(engine.steps[first_step:], engine.config.block_size, engine.config.max_model_len)
    return {"wall_s": wall, "output_tokens": summary["output_tokens"], "throughput_tok_s": summary["throughput_tok_s"],
            "steps": len(engine.steps) - first_step, "ttft_p50": summary["ttft_p50"], "tpot_p50": summary["tpot_p50"],
            "kv_util_paged": util["paged"], "kv_util_contiguous": util["contiguous"],
            "preemptions": sum(r.num_preemptions for r in requests)}
