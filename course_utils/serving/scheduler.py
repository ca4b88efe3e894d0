"""Iteration-level scheduling (continuous batching; Orca, Yu et al. 2022; vLLM's scheduler).

A *static* batch starts B requests together and runs until the longest is done, so a slot whose
request finished early idles, and a new request waits for the whole batch. An iteration-level
scheduler decides again at **every step** (one forward pass) which requests run:

1. **Running requests first**, oldest first: a decoding request needs 1 token of the step's token
   budget, a request still in (chunked) prefill needs ``min(remaining prompt, budget left)``. Each
   needs KV slots for those tokens; when no block is free, the **newest** running request is
   preempted *by recompute*: its blocks are freed and it goes back to the front of the waiting
   queue, to be prefilled again (prompt + what it generated so far) when memory allows.
2. **Then admit waiting requests** in arrival order (FCFS, so none starves) while the token budget,
   ``max_num_seqs`` and free blocks allow. Prefill tokens of new requests and decode tokens of
   running ones go in the **same** step; a long prompt is split over several steps (chunked
   prefill) so it never stalls the running decodes for long.
3. A request **finishes independently** (EOS, a stop token, ``max_tokens``, the context limit, or
   an abort) and its blocks are freed at once, so the next step can admit someone else.

Before computing a new request, its full prompt blocks are looked up in the prefix cache
(:mod:`course_utils.serving.blocks`); hits are reused and only the rest is computed. At least one
token is always left to compute, because the next token's logits come from the last one.

This module is pure Python (no torch): the engine runs the model on what :meth:`Scheduler.schedule`
returns and reports back through :meth:`Scheduler.update`.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from course_utils import checks
from course_utils.serving.blocks import BlockAllocator, BlockTable, NoFreeBlocksError, block_hash

__all__ = ["FinishReason", "Request", "SamplingParams", "ScheduledChunk", "Scheduler", "preempt", "schedule_step"]

WAITING, RUNNING, FINISHED = "waiting", "running", "finished"


class FinishReason:
    """Why a request stopped (OpenAI's ``finish_reason`` where one exists)."""

    STOP = "stop"  # EOS or a stop token
    LENGTH = "length"  # max_tokens or the context limit
    ABORT = "abort"  # cancelled by the caller (client disconnect, timeout)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request.

    ``temperature = 0`` means greedy (argmax), as in OpenAI's API; otherwise sample from
    ``softmax(z / T)`` after top-k and top-p (nucleus) filtering, with a per-request seeded RNG.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        checks.positive_int(max_tokens=self.max_tokens)
        checks.number("temperature", self.temperature, low=0.0, high=2.0)
        checks.number("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        if self.top_k is not None:
            checks.positive_int(top_k=self.top_k)
        if self.seed is not None:
            checks.non_negative_int(seed=self.seed)
        checks.instance("ignore_eos", self.ignore_eos, bool)
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


_ids = itertools.count()


@dataclass
class Request:
    """One generation request and everything the scheduler tracks about it."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    arrival_time: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    status: str = WAITING
    finish_reason: str | None = None
    num_computed: int = 0  # tokens whose K/V are in the cache
    num_cached_tokens: int = 0  # of those, how many came from the prefix cache at admission
    num_preemptions: int = 0
    first_token_time: float | None = None
    finish_time: float | None = None
    token_times: list[float] = field(default_factory=list)
    block_table: BlockTable | None = None
    block_hashes: list[int] = field(default_factory=list)  # hash chain of the full blocks computed

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_ids, Sequence) or isinstance(self.prompt_ids, str) \
                or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.prompt_ids):
            raise TypeError("prompt_ids must be a list of non-negative int token ids")
        checks.non_empty("prompt_ids", self.prompt_ids)
        checks.instance("params", self.params, SamplingParams)
        self.prompt_ids = list(self.prompt_ids)
        if not self.request_id:
            self.request_id = f"req-{next(_ids)}"

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_uncomputed(self) -> int:
        """Tokens still to run through the model before the next token can be sampled."""
        return self.num_tokens - self.num_computed

    @property
    def is_finished(self) -> bool:
        return self.status == FINISHED


@dataclass
class ScheduledChunk:
    """``num_tokens`` tokens of ``request`` (from position ``start``) to compute this step;
    ``copies`` are the copy-on-write block copies to apply first."""

    request: Request
    start: int
    num_tokens: int
    copies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the end of the request's tokens (then a token is sampled)."""
        return self.start + self.num_tokens == self.request.num_tokens


def preempt(request: Request, running: list[Request], waiting: deque[Request]) -> None:
    """Preemption by recompute: free the request's blocks and put it back at the front of the
    waiting queue; its K/V (prompt and output so far) are recomputed when it is admitted again."""
    running.remove(request)
    request.block_table.free()
    request.num_computed = 0
    request.block_hashes = []
    request.status = WAITING
    request.num_preemptions += 1
    waiting.appendleft(request)


def schedule_step(running: list[Request], waiting: deque[Request], *, max_num_seqs: int, max_num_batched_tokens: int,
                  chunked_prefill: bool = True, prefix_match: Callable[[Request], None] | None = None,
                  ) -> tuple[list[ScheduledChunk], list[Request]]:
    """One iteration of continuous batching; updates ``running`` and ``waiting`` in place.

    1. For each running request, oldest first, while the token budget lasts: take
       ``n = min(request.num_uncomputed, budget)`` tokens and reserve their KV slots
       (``block_table.append_slots(n)``); on :class:`NoFreeBlocksError` preempt the newest running
       request (:func:`preempt`) and retry — if that was the request itself, stop.
    2. Unless something was preempted, admit waiting requests first-come-first-served while the
       budget, ``max_num_seqs`` and free blocks allow (``prefix_match`` may first attach cached
       prompt blocks). Without ``chunked_prefill`` a prompt must fit the budget left whole.

    Returns the chunks to compute (running ones first) and the requests preempted in this step.
    """
    checks.positive_int(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    budget = max_num_batched_tokens
    chunks: list[ScheduledChunk] = []
    preempted: list[Request] = []
    i = 0
    while i < len(running) and budget > 0:
        request = running[i]
        n = min(request.num_uncomputed, budget)
        copies = None
        while copies is None:
            try:
                copies = request.block_table.append_slots(n)
            except NoFreeBlocksError:
                victim = running[-1]
                preempt(victim, running, waiting)
                preempted.append(victim)
                if victim is request:
                    break
        if copies is None:
            break
        chunks.append(ScheduledChunk(request, request.num_computed, n, copies))
        budget -= n
        i += 1
    while waiting and budget > 0 and len(running) < max_num_seqs and not preempted:
        request = waiting[0]
        if prefix_match is not None and request.num_computed == 0:
            prefix_match(request)
        n = min(request.num_uncomputed, budget)
        if (n < request.num_uncomputed and not chunked_prefill) \
                or request.block_table.blocks_needed(n) > request.block_table.allocator.num_free:
            request.block_table.free()  # give back any prefix hits (they stay cached)
            request.num_computed = request.num_cached_tokens = 0
            request.block_hashes = []
            break
        copies = request.block_table.append_slots(n)
        waiting.popleft()
        request.status = RUNNING
        running.append(request)
        chunks.append(ScheduledChunk(request, request.num_computed, n, copies))
        budget -= n
    return chunks, preempted


class Scheduler:
    """Continuous batching over a paged KV cache (see the module docstring for the policy).

    Args:
        allocator: the KV block allocator.
        max_num_seqs: at most this many running requests.
        max_num_batched_tokens: token budget of one step (prefill chunks + decodes).
        max_model_len: a request stops (``"length"``) when prompt + output reach it.
        enable_chunked_prefill: split prompts longer than the budget left over several steps
            (otherwise a prompt waits until it fits in one step's budget whole).
        enable_prefix_caching: reuse cached full prompt blocks.
    """

    def __init__(self, allocator: BlockAllocator, *, max_num_seqs: int = 32, max_num_batched_tokens: int = 256,
                 max_model_len: int = 2048, enable_chunked_prefill: bool = True,
                 enable_prefix_caching: bool = True) -> None:
        checks.instance("allocator", allocator, BlockAllocator)
        checks.positive_int(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                            max_model_len=max_model_len)
        if not enable_chunked_prefill and max_num_batched_tokens < max_model_len:
            raise ValueError(f"without chunked prefill max_num_batched_tokens ({max_num_batched_tokens}) must be "
                             f">= max_model_len ({max_model_len}), or a long prompt could never be scheduled")
        self.allocator = allocator
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.enable_chunked_prefill = enable_chunked_prefill
        self.enable_prefix_caching = enable_prefix_caching
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    # queue management -----------------------------------------------------------------------
    def add(self, request: Request) -> None:
        """Queue a new request (FCFS)."""
        checks.instance("request", request, Request)
        if request.num_tokens >= self.max_model_len:
            raise ValueError(f"prompt has {request.num_tokens} tokens; max_model_len={self.max_model_len} "
                             "leaves no room to generate")
        max_blocks = -(-min(request.num_tokens + request.params.max_tokens, self.max_model_len)
                       // self.allocator.block_size)
        if max_blocks > self.allocator.num_blocks:
            raise ValueError(f"request needs up to {max_blocks} KV blocks but the cache has only "
                             f"{self.allocator.num_blocks}")
        request.block_table = BlockTable(self.allocator)
        self.waiting.append(request)

    def abort(self, request: Request) -> None:
        """Stop ``request`` now and free its blocks (no-op if it already finished)."""
        self._finish(request, FinishReason.ABORT)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _finish(self, request: Request, reason: str) -> None:
        if request.status == FINISHED:
            return
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        request.block_table.free()
        request.status = FINISHED
        request.finish_reason = reason
        request.finish_time = time.perf_counter()

    # prefix cache -------------------------------------------------------------------------
    def _hash_blocks(self, request: Request, upto_tokens: int) -> None:
        """Extend ``request.block_hashes`` over the full blocks of its first ``upto_tokens`` tokens."""
        size = self.allocator.block_size
        ids = request.all_ids
        while (len(request.block_hashes) + 1) * size <= upto_tokens:
            i = len(request.block_hashes)
            parent = request.block_hashes[-1] if request.block_hashes else None
            request.block_hashes.append(block_hash(parent, ids[i * size:(i + 1) * size]))

    def _match_prefix(self, request: Request) -> None:
        """Reuse cached full blocks of a request about to be computed from scratch."""
        size = self.allocator.block_size
        ids = request.all_ids
        self._hash_blocks(request, request.num_tokens - 1)  # keep >= 1 token to compute
        for i, h in enumerate(request.block_hashes):
            block = self.allocator.lookup(h, ids[i * size:(i + 1) * size])
            if block is None:
                del request.block_hashes[i:]
                break
            request.block_table.append_cached(block)
        request.num_computed = request.num_cached_tokens = request.block_table.num_tokens

    def _register_full_blocks(self, request: Request) -> None:
        table = request.block_table
        start = len(request.block_hashes)
        self._hash_blocks(request, request.num_computed)
        size = self.allocator.block_size
        ids = request.all_ids
        for i in range(start, len(request.block_hashes)):
            self.allocator.cache(table.blocks[i], request.block_hashes[i], ids[i * size:(i + 1) * size])

    # one step -----------------------------------------------------------------------------
    def schedule(self) -> list[ScheduledChunk]:
        """Pick the work of the next step (:func:`schedule_step`, with prefix-cache lookups)."""
        chunks, preempted = schedule_step(
            self.running, self.waiting, max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens, chunked_prefill=self.enable_chunked_prefill,
            prefix_match=self._match_prefix if self.enable_prefix_caching else None)
        self.num_preemptions += len(preempted)
        return chunks

    def update(self, chunks: list[ScheduledChunk], sampled: dict[str, int], eos_token_ids: set[int]) -> list[Request]:
        """Record a finished step: ``sampled`` maps request ids to their new token. Returns the
        requests that finished in this step (their blocks are already free)."""
        now = time.perf_counter()
        finished = []
        for chunk in chunks:
            request = chunk.request
            if request.status != RUNNING:
                continue  # aborted during the step
            request.num_computed += chunk.num_tokens
            if self.enable_prefix_caching:
                self._register_full_blocks(request)
            if request.request_id not in sampled:
                continue
            token = sampled[request.request_id]
            request.output_ids.append(token)
            request.token_times.append(now)
            if request.first_token_time is None:
                request.first_token_time = now
            p = request.params
            if (token in eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
                self._finish(request, FinishReason.STOP)
            elif len(request.output_ids) >= p.max_tokens or request.num_tokens >= self.max_model_len:
                self._finish(request, FinishReason.LENGTH)
            if request.status == FINISHED:
                finished.append(request)
        return finished
