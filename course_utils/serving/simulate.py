"""Drive a scheduler and a paged KV cache with a stand-in model, to test scheduling and paging
without a neural network (the lab uses it on the student's allocator, block table and scheduler step).

The stand-in "model" writes each computed token id into its KV slot (found through the block
table) and, when a request samples, reads its whole context back through the block table and
returns :func:`fake_next_token` of it. A wrong slot, a block shared by mistake, or a preempted
request not recomputed all change the outputs, so comparing with :func:`sequential_outputs`
(each request alone, on a plain list) checks the paging end to end.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from course_utils import checks
from course_utils.serving.scheduler import FINISHED, Request, SamplingParams

__all__ = ["SimulationResult", "fake_next_token", "sequential_outputs", "simulate"]


def fake_next_token(token_ids: Sequence[int], vocab: int = 1000) -> int:
    """A deterministic stand-in for a model's greedy choice; depends on every context token in order."""
    h = 0
    for t in token_ids:
        h = (h * 31 + int(t) + 1) % 1_000_003
    return h % vocab


def sequential_outputs(prompts: Sequence[Sequence[int]], max_tokens: Sequence[int], vocab: int = 1000) -> list[list[int]]:
    """The reference: each request generated alone, its context a plain list."""
    out = []
    for prompt, n in zip(prompts, max_tokens):
        ids = list(prompt)
        new = []
        for _ in range(n):
            new.append(fake_next_token(ids, vocab))
            ids.append(new[-1])
        out.append(new)
    return out


@dataclass
class SimulationResult:
    outputs: list[list[int]]  # per request, in arrival order (an aborted request: what it had)
    finish_reasons: list[str | None]
    steps: int
    preemptions: int
    free_blocks_at_end: int
    max_queue_steps: int  # longest a request waited between arrival and finishing, in steps
    bookkeeping_errors: int  # steps where live block tables shared a block or disagreed with num_free
    aborted: list[int] = field(default_factory=list)


def simulate(schedule_fn: Callable, allocator, make_table: Callable, prompts: Sequence[Sequence[int]],
             max_tokens: Sequence[int], *, max_num_seqs: int, max_num_batched_tokens: int, arrivals_per_step: int = 4,
             cancel_prob: float = 0.0, seed: int = 0, vocab: int = 1000, max_steps: int = 200_000) -> SimulationResult:
    """Run ``prompts`` through ``schedule_fn`` (the signature of
    :func:`~course_utils.serving.scheduler.schedule_step`) with block tables ``make_table(allocator)``.

    Requests arrive ``arrivals_per_step`` per step; at each step, with probability ``cancel_prob``,
    a random unfinished request is cancelled (its blocks freed at once).
    """
    checks.positive_int(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                        arrivals_per_step=arrivals_per_step)
    checks.probability("cancel_prob", cancel_prob)
    if len(prompts) != len(max_tokens):
        raise ValueError(f"got {len(prompts)} prompts and {len(max_tokens)} max_tokens")
    rng = random.Random(seed)
    size = allocator.block_size
    cache = [-1] * (allocator.num_blocks * size)
    requests = [Request(list(p), SamplingParams(max_tokens=int(n)), request_id=f"sim-{i}")
                for i, (p, n) in enumerate(zip(prompts, max_tokens))]
    arrival: dict[str, int] = {}
    finished_at: dict[str, int] = {}
    running: list[Request] = []
    waiting: deque[Request] = deque()
    preemptions = errors = step = 0
    aborted = []
    pending = deque(requests)

    def finish(request: Request, reason: str) -> None:
        if request in running:
            running.remove(request)
        elif request in waiting:
            waiting.remove(request)
        request.block_table.free()
        request.status, request.finish_reason = FINISHED, reason
        finished_at[request.request_id] = step

    while (pending or running or waiting) and step < max_steps:
        for _ in range(arrivals_per_step):
            if pending:
                r = pending.popleft()
                r.block_table = make_table(allocator)
                arrival[r.request_id] = step
                waiting.append(r)
        if cancel_prob and rng.random() < cancel_prob and (running or waiting):
            victim = rng.choice(list(running) + list(waiting))
            aborted.append(requests.index(victim))
            finish(victim, "abort")
        chunks, preempted = schedule_fn(running, waiting, max_num_seqs=max_num_seqs,
                                        max_num_batched_tokens=max_num_batched_tokens)
        preemptions += len(preempted)
        for chunk in chunks:  # the stand-in forward pass: write K/V (here: the token ids) into the slots
            for src, dst in chunk.copies:
                cache[dst * size:(dst + 1) * size] = cache[src * size:(src + 1) * size]
            table, ids = chunk.request.block_table, chunk.request.all_ids
            for pos in range(chunk.start, chunk.start + chunk.num_tokens):
                cache[table.slot(pos)] = ids[pos]
        for chunk in chunks:
            request = chunk.request
            request.num_computed += chunk.num_tokens
            if request.num_computed == request.num_tokens:  # sample from the context read back through the table
                context = [cache[request.block_table.slot(p)] for p in range(request.num_tokens)]
                request.output_ids.append(fake_next_token(context, vocab))
                if len(request.output_ids) >= request.params.max_tokens:
                    finish(request, "length")
        live = [b for r in list(running) + list(waiting) for b in r.block_table.blocks]
        if len(live) != len(set(live)) or len(live) != allocator.num_blocks - allocator.num_free:
            errors += 1
        step += 1
    return SimulationResult(
        outputs=[r.output_ids for r in requests], finish_reasons=[r.finish_reason for r in requests], steps=step,
        preemptions=preemptions, free_blocks_at_end=allocator.num_free,
        max_queue_steps=max((finished_at.get(r.request_id, step) - arrival.get(r.request_id, 0) for r in requests),
                            default=0),
        bookkeeping_errors=errors, aborted=sorted(set(aborted)))
