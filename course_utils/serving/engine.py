"""The serving engine: continuous batching (:mod:`~course_utils.serving.scheduler`) over a paged
KV cache (:mod:`~course_utils.serving.blocks`, :mod:`~course_utils.serving.paged_attention`).

One :meth:`LLMEngine.step` is one iteration:

1. the scheduler picks the chunks to compute (decodes and prefill chunks together, within a
   token budget), allocating KV blocks and preempting if memory runs out;
2. all their tokens go through the model in **one** flat forward pass (no padding between
   sequences), each attention call reading K/V through its sequence's block table;
3. every request whose chunk reached its last token samples its next token (greedy when
   ``temperature = 0``); finished requests free their blocks at once.

``add_request`` may be called between any two steps (that is what makes batching continuous);
``abort`` cancels a request and frees its blocks immediately. Everything that touches the engine
holds ``engine.lock``, so a server thread may drive ``step`` while others add or abort requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from course_utils import checks
from course_utils.generation import _eos_ids, _render_prompt, sample_next_token
from course_utils.serving.blocks import BlockAllocator
from course_utils.serving.paged_attention import PagedLlama, block_slots
from course_utils.serving.scheduler import (
    FINISHED,
    RUNNING,
    Request,
    SamplingParams,
    ScheduledChunk,
    Scheduler,
)

__all__ = ["EngineConfig", "LLMEngine", "StepOutput", "encode_prompt"]


@dataclass(frozen=True)
class EngineConfig:
    """Sizes of the engine (the names follow vLLM's engine arguments).

    ``num_blocks · block_size`` token slots of KV memory are allocated up front.
    """

    num_blocks: int = 512
    block_size: int = 16
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 256
    max_model_len: int = 2048
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        checks.positive_int(num_blocks=self.num_blocks, block_size=self.block_size, max_num_seqs=self.max_num_seqs,
                            max_num_batched_tokens=self.max_num_batched_tokens, max_model_len=self.max_model_len)
        checks.instance("enable_chunked_prefill", self.enable_chunked_prefill, bool)
        checks.instance("enable_prefix_caching", self.enable_prefix_caching, bool)


@dataclass
class StepOutput:
    """What one step produced for one request: its new token (if any) and whether it finished."""

    request: Request
    new_token_ids: list[int]
    finished: bool

    @property
    def request_id(self) -> str:
        return self.request.request_id


@dataclass
class StepRecord:
    """One step, for plots and KV-utilisation metrics."""

    time: float
    duration: float
    request_ids: list[str]
    num_prefill_tokens: int
    num_decode_tokens: int
    num_running: int
    num_waiting: int
    used_blocks: int
    tokens_in_cache: int
    extra: dict = field(default_factory=dict)


def encode_prompt(tokenizer, prompt: str | Sequence[int] | list[dict[str, str]]) -> list[int]:
    """Token ids of a prompt: a list of ids as is; chat messages through the chat template
    (with the assistant turn opened); plain text tokenized as it is (a completion prompt)."""
    if isinstance(prompt, Sequence) and not isinstance(prompt, str) and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    if isinstance(prompt, list):
        text, _ = _render_prompt(tokenizer, prompt, True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    checks.instance("prompt", prompt, str)
    return tokenizer(prompt)["input_ids"]


class LLMEngine:
    """Continuous-batching engine with a paged KV cache, on a transformers LLaMA-style model.

    Args:
        model: a causal LM in eval mode (e.g. ``load_causal_lm("smollm2-135m-instruct")[0]``).
        tokenizer: its tokenizer (for text prompts, EOS ids and decoding).
        config: sizes (:class:`EngineConfig`); keyword arguments override its fields.
    """

    def __init__(self, model: torch.nn.Module, tokenizer=None, config: EngineConfig | None = None, **overrides) -> None:
        config = config or EngineConfig()
        checks.instance("config", config, EngineConfig)
        if overrides:
            config = EngineConfig(**{**config.__dict__, **overrides})
        self.config = config
        self.tokenizer = tokenizer
        self.runner = PagedLlama(model)
        self.allocator = BlockAllocator(config.num_blocks, config.block_size)
        self.cache = self.runner.make_cache(config.num_blocks, config.block_size)
        self.scheduler = Scheduler(self.allocator, max_num_seqs=config.max_num_seqs,
                                   max_num_batched_tokens=config.max_num_batched_tokens,
                                   max_model_len=config.max_model_len,
                                   enable_chunked_prefill=config.enable_chunked_prefill,
                                   enable_prefix_caching=config.enable_prefix_caching)
        self.eos_token_ids = _eos_ids(model, tokenizer) if tokenizer is not None else \
            set(filter(None, [getattr(model.generation_config, "eos_token_id", None)]))
        self.requests: dict[str, Request] = {}
        self.generators: dict[str, torch.Generator] = {}
        self.steps: list[StepRecord] = []
        self.lock = threading.RLock()

    # requests -----------------------------------------------------------------------------
    def add_request(self, prompt: str | Sequence[int] | list[dict[str, str]], params: SamplingParams | None = None,
                    request_id: str | None = None) -> Request:
        """Queue a request; it joins the running batch at the next step that has room."""
        params = params or SamplingParams()
        ids = encode_prompt(self.tokenizer, prompt) if self.tokenizer is not None or isinstance(prompt, str) \
            else list(prompt)
        with self.lock:
            if request_id is not None and request_id in self.requests and not self.requests[request_id].is_finished:
                raise ValueError(f"request_id {request_id!r} is already in use")
            request = Request(ids, params, request_id=request_id or "")
            self.scheduler.add(request)
            self.requests[request.request_id] = request
            if params.seed is not None:
                self.generators[request.request_id] = torch.Generator(self.runner.device).manual_seed(params.seed)
        return request

    def abort(self, request_id: str) -> bool:
        """Cancel a request and free its KV blocks now. Returns False if it had already finished."""
        with self.lock:
            request = self.requests.get(request_id)
            if request is None or request.is_finished:
                return False
            self.scheduler.abort(request)
            self.generators.pop(request_id, None)
            return True

    def fork(self, request_id: str, new_request_id: str | None = None) -> Request:
        """A copy of a running request that shares all its KV blocks (refcounts + 1): the next
        write into the shared last block is copy-on-write. Both then continue independently."""
        with self.lock:
            parent = self.requests.get(request_id)
            if parent is None or parent.status != RUNNING:
                raise ValueError(f"request {request_id!r} is not running; only a running request can be forked")
            if len(self.scheduler.running) >= self.config.max_num_seqs:
                raise ValueError(f"max_num_seqs={self.config.max_num_seqs} requests are already running")
            child = Request(parent.prompt_ids, parent.params, request_id=new_request_id or "",
                            arrival_time=parent.arrival_time)
            child.output_ids = list(parent.output_ids)
            child.token_times = list(parent.token_times)
            child.first_token_time = parent.first_token_time
            child.num_computed = parent.num_computed
            child.block_hashes = list(parent.block_hashes)
            child.block_table = parent.block_table.fork()
            child.status = RUNNING
            self.scheduler.running.append(child)
            self.requests[child.request_id] = child
            return child

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    # one step -----------------------------------------------------------------------------
    def _batch(self, chunks: list[ScheduledChunk]):
        device, size = self.runner.device, self.config.block_size
        ids: list[int] = []
        positions: list[int] = []
        write_slots, groups, decodes, sample_rows = [], [], [], []
        row = 0
        for chunk in chunks:
            req, start, n = chunk.request, chunk.start, chunk.num_tokens
            end = start + n
            ids.extend(req.all_ids[start:end])
            positions.extend(range(start, end))
            slots = block_slots(req.block_table.blocks, end, size, device)
            write_slots.append(slots[start:end])
            if n == 1:
                decodes.append((row, slots, end))
            else:
                groups.append({"rows": torch.arange(row, row + n, device=device), "slots": slots[None],
                               "context_lens": torch.tensor([end], device=device),
                               "query_positions": torch.arange(start, end, device=device)[None]})
            if chunk.samples:
                sample_rows.append(row + n - 1)
            row += n
        if decodes:
            width = max(end for _, _, end in decodes)
            slots = torch.zeros(len(decodes), width, dtype=torch.long, device=device)
            for i, (_, s, end) in enumerate(decodes):
                slots[i, :end] = s
            lens = torch.tensor([end for _, _, end in decodes], device=device)
            groups.append({"rows": torch.tensor([r for r, _, _ in decodes], device=device), "slots": slots,
                           "context_lens": lens, "query_positions": (lens - 1)[:, None]})
        as_long = {"dtype": torch.long, "device": device}
        return (torch.tensor(ids, **as_long), torch.tensor(positions, **as_long), torch.cat(write_slots), groups,
                torch.tensor(sample_rows, **as_long))

    def _sample(self, requests: list[Request], logits: torch.Tensor) -> dict[str, int]:
        out: dict[str, int] = {}
        greedy = [i for i, r in enumerate(requests) if r.params.temperature == 0]
        if greedy:
            tokens = logits[greedy].argmax(dim=-1).tolist()
            out.update({requests[i].request_id: t for i, t in zip(greedy, tokens)})
        for i, r in enumerate(requests):
            p = r.params
            if p.temperature == 0:
                continue
            token = sample_next_token(logits[i], temperature=p.temperature, top_k=p.top_k,
                                      top_p=p.top_p if p.top_p < 1 else None, do_sample=True,
                                      generator=self.generators.get(r.request_id))
            out[r.request_id] = int(token)
        return out

    def step(self) -> list[StepOutput]:
        """Run one iteration; return the new tokens and the requests that finished."""
        with self.lock:
            t0 = time.perf_counter()
            chunks = self.scheduler.schedule()
            if not chunks:
                return []
            self.cache.copy_blocks([c for chunk in chunks for c in chunk.copies])
            input_ids, positions, write_slots, groups, sample_rows = self._batch(chunks)
            logits = self.runner.forward(self.cache, input_ids, positions, write_slots, groups, sample_rows)
            samplers = [c.request for c in chunks if c.samples]
            sampled = self._sample(samplers, logits)
            before = {c.request.request_id: len(c.request.output_ids) for c in chunks}
            self.scheduler.update(chunks, sampled, self.eos_token_ids)
            outputs = []
            for chunk in chunks:
                req = chunk.request
                new = req.output_ids[before[req.request_id]:]
                if new or req.status == FINISHED:
                    outputs.append(StepOutput(req, new, req.status == FINISHED))
                if req.status == FINISHED:
                    self.generators.pop(req.request_id, None)
            prefill = sum(c.num_tokens for c in chunks if c.num_tokens > 1 or c.start < len(c.request.prompt_ids))
            running = self.scheduler.running
            self.steps.append(StepRecord(
                time=t0, duration=time.perf_counter() - t0, request_ids=[c.request.request_id for c in chunks],
                num_prefill_tokens=prefill, num_decode_tokens=sum(c.num_tokens for c in chunks) - prefill,
                num_running=len(running), num_waiting=len(self.scheduler.waiting),
                used_blocks=self.allocator.num_used, tokens_in_cache=sum(r.num_computed for r in running)))
            return outputs

    # convenience --------------------------------------------------------------------------
    def run_until_done(self, progress: bool = False) -> None:
        """Step until every queued request has finished."""
        from tqdm.auto import tqdm

        bar = tqdm(desc="engine steps", disable=not progress, unit="step")
        while self.has_unfinished:
            self.step()
            bar.update()
        bar.close()

    def generate(self, prompts: Iterable[str | Sequence[int] | list[dict[str, str]]],
                 params: SamplingParams | Sequence[SamplingParams] | None = None, *,
                 progress: bool = False) -> list[Request]:
        """Queue every prompt, run until all finish, and return the requests in prompt order
        (``.output_ids``, ``.finish_reason``, timings)."""
        prompts = list(prompts)
        plist = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        requests = [self.add_request(p, sp) for p, sp in zip(prompts, plist)]
        self.run_until_done(progress=progress)
        return requests

    def stream(self, prompt: str | Sequence[int] | list[dict[str, str]],
               params: SamplingParams | None = None) -> Iterator[int]:
        """Yield the tokens of one request as they are produced (other queued requests run
        alongside it). Closing the iterator early aborts the request and frees its blocks."""
        request = self.add_request(prompt, params)
        try:
            while not request.is_finished:
                for out in self.step():
                    if out.request is request:
                        yield from out.new_token_ids
        finally:
            self.abort(request.request_id)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
