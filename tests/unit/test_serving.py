"""course_utils.serving: the block allocator and block tables (invariants under random use), paged
attention (against contiguous attention), the continuous-batching scheduler (admission, token
budget, chunked prefill, preemption, FCFS, abort), prefix caching, copy-on-write, and the
engine's exactness: greedy outputs token-identical to ``model.generate`` and to the course's
contiguous-cache loop, under chunked prefill, preemption, prefix hits and forks."""

from __future__ import annotations

import random

import pytest
import torch

from course_utils.arch.attention import causal_attention
from course_utils.serving import (
    BlockAllocator,
    BlockTable,
    LLMEngine,
    NoFreeBlocksError,
    PagedKVCache,
    Request,
    SamplingParams,
    Scheduler,
    block_slots,
    kv_utilisation,
    latency_summary,
    paged_attention,
    request_latencies,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- allocator ----
def test_allocator_refcounts_free_list_and_errors():
    alloc = BlockAllocator(4, 2)
    a, b = alloc.allocate(), alloc.allocate()
    assert (a, b) == (0, 1) and alloc.num_free == 2 and alloc.ref_counts[:2] == [1, 1]
    alloc.incref(a)
    alloc.free(a)
    assert alloc.num_free == 2  # still referenced once
    alloc.free(a)
    assert alloc.num_free == 3
    with pytest.raises(ValueError, match="double free"):
        alloc.free(a)
    with pytest.raises(ValueError, match="block"):
        alloc.free(17)
    alloc.allocate(), alloc.allocate(), alloc.allocate()
    with pytest.raises(NoFreeBlocksError):
        alloc.allocate()
    alloc.check_invariants()
    with pytest.raises(ValueError, match="num_blocks"):
        BlockAllocator(0, 16)
    with pytest.raises(ValueError, match="block_size"):
        BlockAllocator(8, -1)


def test_block_table_slots_and_all_or_nothing_append():
    alloc = BlockAllocator(3, 4)
    table = BlockTable(alloc)
    assert table.append_slots(5) == [] and table.blocks == [0, 1] and table.num_tokens == 5
    assert [table.slot(i) for i in range(5)] == [0, 1, 2, 3, 4]
    other = BlockTable(alloc)
    other.append_slots(1)  # takes block 2
    table.append_slots(3)  # fills block 1, no new block
    with pytest.raises(NoFreeBlocksError):
        table.append_slots(1)  # needs a 3rd block: none free
    assert table.num_tokens == 8 and table.blocks == [0, 1]  # unchanged
    assert block_slots(table.blocks, 6, 4).tolist() == [0, 1, 2, 3, 4, 5]
    table.free()
    other.free()
    assert alloc.num_free == 3
    alloc.check_invariants()


def test_copy_on_write_after_fork():
    alloc = BlockAllocator(4, 4)
    parent = BlockTable(alloc)
    parent.append_slots(6)  # blocks 0 (full) and 1 (half)
    child = parent.fork()
    assert alloc.ref_counts[:2] == [2, 2]
    copies = child.append_slots(1)  # writes into the shared half block: copy it
    assert copies == [(1, 2)] and child.blocks == [0, 2] and alloc.ref_counts[:3] == [2, 1, 1]
    assert parent.append_slots(1) == []  # block 1 is private to the parent now
    child.free()
    parent.free()
    alloc.check_invariants()
    assert alloc.num_free == 4


def test_prefix_cache_revives_freed_blocks_and_forgets_on_reuse():
    alloc = BlockAllocator(2, 2)
    table = BlockTable(alloc)
    table.append_slots(2)
    block = table.blocks[0]
    alloc.cache(block, 123, [5, 6])
    table.free()
    assert alloc.num_free == 2 and alloc.lookup(123, [5, 6]) == block  # free but still cached
    assert alloc.lookup(123, [5, 7]) is None  # same hash, other tokens: not a hit
    other = BlockTable(alloc)
    other.append_cached(block)
    assert alloc.num_free == 1 and other.num_tokens == 2
    other.free()
    # the cached block was freed last: it is handed out after the uncached one, then forgotten
    assert alloc.allocate() != block
    assert alloc.allocate() == block and alloc.lookup(123, [5, 6]) is None
    alloc.check_invariants()


def test_no_leaked_block_after_random_use():
    rng = random.Random(0)
    alloc = BlockAllocator(32, 4)
    tables: list[BlockTable] = []
    for _ in range(2000):
        op = rng.random()
        try:
            if op < 0.4 or not tables:
                t = BlockTable(alloc)
                t.append_slots(rng.randint(1, 9))
                tables.append(t)
            elif op < 0.7:
                rng.choice(tables).append_slots(rng.randint(1, 3))
            elif op < 0.8:
                tables.append(rng.choice(tables).fork())
            else:
                tables.pop(rng.randrange(len(tables))).free()
        except NoFreeBlocksError:
            tables.pop(rng.randrange(len(tables))).free()
        alloc.check_invariants()
        held = sum(len(t.blocks) for t in tables)
        assert sum(alloc.ref_counts) == held
    for t in tables:
        t.free()
    assert alloc.num_free == 32 and sum(alloc.ref_counts) == 0


# ----------------------------------------------------------------------- paged attention ----
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2), (4, 1)])
def test_paged_attention_matches_contiguous_attention(heads, kv_heads):
    gen = torch.Generator().manual_seed(0)
    block, d, lengths = 4, 8, [7, 3, 12]
    cache = PagedKVCache(1, 16, block, kv_heads, d)
    order = torch.randperm(16, generator=gen).tolist()  # blocks scattered in any order
    for length in lengths:
        blocks = [order.pop() for _ in range(-(-length // block))]
        slots = block_slots(blocks, length, block)
        q = torch.randn(1, heads, length, d, generator=gen)
        k = torch.randn(1, kv_heads, length, d, generator=gen)
        v = torch.randn(1, kv_heads, length, d, generator=gen)
        cache.write(0, slots, k[0].transpose(0, 1), v[0].transpose(0, 1))
        want = causal_attention(q, k, v)  # (1, heads, length, d)
        # a prefill: every query of the sequence at once
        got = paged_attention(q.transpose(1, 2), cache.k[0], cache.v[0], slots[None], torch.tensor([length]),
                              torch.arange(length)[None])
        torch.testing.assert_close(got.transpose(1, 2), want, rtol=1e-5, atol=1e-5)
        # a decode of the last token, padded to a longer slot row
        padded = torch.cat([slots, torch.zeros(5, dtype=torch.long)])[None]
        got = paged_attention(q[:, :, -1:].transpose(1, 2), cache.k[0], cache.v[0], padded,
                              torch.tensor([length]), torch.tensor([[length - 1]]))
        torch.testing.assert_close(got.transpose(1, 2), want[:, :, -1:], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- scheduler ----
def _simulate(scheduler: Scheduler, steps: int = 10_000, eos: int = -1, record=None):
    """Drive a scheduler without a model: each sampled token is 1."""
    for _ in range(steps):
        if not scheduler.has_unfinished:
            return
        chunks = scheduler.schedule()
        if record is not None:
            record.append(chunks)
        assert sum(c.num_tokens for c in chunks) <= scheduler.max_num_batched_tokens
        assert len(scheduler.running) <= scheduler.max_num_seqs
        scheduler.update(chunks, {c.request.request_id: 1 for c in chunks if c.samples}, {eos})
        scheduler.allocator.check_invariants()
    raise AssertionError("scheduler did not finish")


def test_scheduler_mixes_prefill_and_decode_and_chunks_long_prompts():
    alloc = BlockAllocator(64, 4)
    sched = Scheduler(alloc, max_num_seqs=4, max_num_batched_tokens=8, max_model_len=64)
    first = Request([1] * 3, SamplingParams(max_tokens=5))
    sched.add(first)
    steps = []
    sched.update(c := sched.schedule(), {first.request_id: 1}, set())
    steps.append(c)
    late = Request([2] * 20, SamplingParams(max_tokens=2))  # longer than the budget: chunked
    sched.add(late)
    _simulate(sched, record=steps)
    second = steps[1]
    assert [(c.request is first, c.num_tokens) for c in second] == [(True, 1), (False, 7)]  # decode + prefill chunk
    assert [c.num_tokens for s in steps for c in s if c.request is late][:3] == [7, 7, 6]
    assert first.output_ids == [1] * 5 and late.output_ids == [1] * 2
    assert first.finish_reason == late.finish_reason == "length"
    assert alloc.num_free == 64


def test_scheduler_without_chunking_waits_for_room_in_one_step():
    sched = Scheduler(BlockAllocator(64, 4), max_num_batched_tokens=32, max_model_len=32,
                      enable_chunked_prefill=False)
    a, b = Request([1] * 20, SamplingParams(max_tokens=3)), Request([1] * 20, SamplingParams(max_tokens=3))
    sched.add(a)
    sched.add(b)
    assert [c.request for c in sched.schedule()] == [a]  # b's 20 tokens do not fit the 12 left
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        Scheduler(BlockAllocator(8, 4), max_num_batched_tokens=16, max_model_len=64, enable_chunked_prefill=False)


def test_scheduler_preempts_newest_when_blocks_run_out_and_no_request_starves():
    alloc = BlockAllocator(6, 4)  # 24 slots for 4 requests that each grow to 4 + 12 = 16 tokens
    sched = Scheduler(alloc, max_num_seqs=4, max_num_batched_tokens=32, max_model_len=64)
    reqs = [Request([i + 2] * 4, SamplingParams(max_tokens=12)) for i in range(4)]
    for r in reqs:
        sched.add(r)
    finish_order = []
    for _ in range(500):
        if not sched.has_unfinished:
            break
        chunks = sched.schedule()
        done = sched.update(chunks, {c.request.request_id: 1 for c in chunks if c.samples}, set())
        finish_order += done
        alloc.check_invariants()
    assert sched.num_preemptions > 0
    assert all(len(r.output_ids) == 12 for r in reqs)  # everyone finished, none starved
    assert finish_order[0] is reqs[0]  # the oldest is never the one preempted
    assert reqs[0].num_preemptions == 0 and sum(r.num_preemptions for r in reqs) == sched.num_preemptions
    assert alloc.num_free == 6


def test_scheduler_abort_frees_blocks_and_rejects_impossible_requests():
    alloc = BlockAllocator(8, 4)
    sched = Scheduler(alloc, max_model_len=64)
    r = Request([1] * 10, SamplingParams(max_tokens=5))
    sched.add(r)
    sched.schedule()
    assert alloc.num_free < 8
    sched.abort(r)
    assert alloc.num_free == 8 and r.finish_reason == "abort" and not sched.has_unfinished
    with pytest.raises(ValueError, match="max_model_len"):
        sched.add(Request([1] * 64))
    with pytest.raises(ValueError, match="KV blocks"):
        sched.add(Request([1] * 30, SamplingParams(max_tokens=20)))
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(TypeError, match="prompt_ids"):
        Request(["a"])


def test_prefix_cache_hits_full_blocks_and_leaves_a_token_to_compute():
    alloc = BlockAllocator(32, 4)
    sched = Scheduler(alloc, max_num_batched_tokens=64, max_model_len=64)
    system = list(range(10, 22))  # 12 tokens = 3 full blocks
    a = Request(system + [1, 2], SamplingParams(max_tokens=2))
    sched.add(a)
    _simulate(sched)
    b = Request(system + [3], SamplingParams(max_tokens=2))
    sched.add(b)
    chunk, = sched.schedule()
    assert b.num_cached_tokens == 12 and chunk.start == 12 and chunk.num_tokens == 1
    c = Request(list(system), SamplingParams(max_tokens=2))  # whole prompt cached: recompute the last block
    sched.add(c)
    chunk = sched.schedule()[-1]
    assert c.num_cached_tokens == 8 and chunk.num_tokens == 4
    _simulate(sched)
    assert alloc.num_free == 32


# ------------------------------------------------------------------------------- engine ----
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    "def fibonacci(n):",
    [{"role": "user", "content": "Name three colours."}],
    "The quick brown fox",
]
MAX_NEW = 12


@pytest.fixture(scope="module")
def smollm2():
    from course_utils.models import load_causal_lm

    model, tokenizer = load_causal_lm("smollm2-135m-instruct", device="cpu")
    return model, tokenizer


@pytest.fixture(scope="module")
def references(smollm2):
    """Greedy continuations from transformers' ``model.generate`` (the reference)."""
    from course_utils.serving import encode_prompt

    model, tok = smollm2
    out = []
    for p in PROMPTS:
        ids = torch.tensor([encode_prompt(tok, p)])
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def test_engine_greedy_matches_model_generate_with_chunked_prefill(smollm2, references):
    model, tok = smollm2
    # small blocks and budget: prompts are chunked, decodes and prefills share steps
    engine = LLMEngine(model, tok, num_blocks=64, block_size=4, max_num_batched_tokens=8, max_num_seqs=4)
    reqs = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_NEW))
    assert [r.output_ids for r in reqs] == references
    assert any(s.num_prefill_tokens and s.num_decode_tokens for s in engine.steps)  # mixed steps happened
    assert engine.allocator.num_free == 64
    engine.allocator.check_invariants()


def test_engine_matches_contiguous_cache_loop_and_seeded_sampling(smollm2):
    from course_utils.generation import generate

    model, tok = smollm2
    engine = LLMEngine(model, tok, num_blocks=64, block_size=8)
    prompt = "Once upon a time"
    greedy = engine.generate([prompt], SamplingParams(max_tokens=MAX_NEW))[0]
    loop = generate(model, tok, prompt, max_new_tokens=MAX_NEW, do_sample=False, use_chat_template=False)
    assert greedy.output_ids == loop.token_ids
    params = SamplingParams(max_tokens=MAX_NEW, temperature=0.8, top_k=50, top_p=0.9, seed=7)
    sampled = engine.generate([prompt, "Another prompt", prompt], [params, SamplingParams(max_tokens=3), params])
    loop = generate(model, tok, prompt, max_new_tokens=MAX_NEW, temperature=0.8, top_k=50, top_p=0.9, seed=7,
                    use_chat_template=False)
    assert sampled[0].output_ids == sampled[2].output_ids == loop.token_ids


def test_engine_exact_under_preemption_prefix_hits_and_fork(smollm2, references):
    model, tok = smollm2
    # 16 blocks of 4 = 64 slots for 4 requests of 15-50 tokens each: preemption by recompute
    engine = LLMEngine(model, tok, num_blocks=16, block_size=4, max_num_batched_tokens=64, max_num_seqs=4)
    reqs = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_NEW))
    assert engine.scheduler.num_preemptions > 0
    assert [r.output_ids for r in reqs] == references
    again = engine.generate(PROMPTS[:1], SamplingParams(max_tokens=MAX_NEW))[0]  # prompt blocks cached
    assert again.num_cached_tokens > 0 and again.output_ids == references[0]
    # fork mid-generation: both continuations equal the reference (copy-on-write keeps them apart)
    engine = LLMEngine(model, tok, num_blocks=64, block_size=4)
    parent = engine.add_request(PROMPTS[1], SamplingParams(max_tokens=MAX_NEW))
    while len(parent.output_ids) < 3:
        engine.step()
    child = engine.fork(parent.request_id)
    engine.run_until_done()
    assert parent.output_ids == child.output_ids == references[1]
    assert engine.allocator.num_free == 64


def test_engine_stream_and_cancel_free_blocks_at_once(smollm2, references):
    model, tok = smollm2
    engine = LLMEngine(model, tok, num_blocks=32, block_size=4)
    assert list(engine.stream(PROMPTS[3], SamplingParams(max_tokens=MAX_NEW))) == references[3]
    stream = engine.stream(PROMPTS[3], SamplingParams(max_tokens=MAX_NEW))
    first = [next(stream), next(stream)]
    assert first == references[3][:2] and engine.allocator.num_free < 32
    stream.close()  # the client went away
    assert engine.allocator.num_free == 32 and not engine.has_unfinished
    r = engine.add_request("hello", SamplingParams(max_tokens=50))
    engine.step()
    assert engine.abort(r.request_id) and r.finish_reason == "abort" and engine.allocator.num_free == 32
    assert not engine.abort(r.request_id)


def test_metrics_from_an_engine_run(smollm2):
    model, tok = smollm2
    engine = LLMEngine(model, tok, num_blocks=64, block_size=4, max_model_len=256)
    reqs = engine.generate(["a", "b c", "d e f"], SamplingParams(max_tokens=4, ignore_eos=True))
    rows = [request_latencies(r) for r in reqs]
    assert all(r["output_tokens"] == 4 and 0 < r["ttft"] <= r["e2e"] and r["tpot"] > 0 for r in rows)
    summary = latency_summary(rows, wall_time=1.0)
    assert summary["output_tokens"] == 12 and summary["ttft_p50"] <= summary["ttft_p95"]
    util = kv_utilisation(engine.steps, 4, 256)
    assert 0.3 < util["paged"] <= 1.0 and util["contiguous"] < 0.05


def test_simulated_paging_matches_sequential_with_cancellations_and_preemption():
    from course_utils.serving.scheduler import schedule_step
    from course_utils.serving.simulate import sequential_outputs, simulate

    rng = random.Random(0)
    prompts = [[rng.randrange(1000) for _ in range(rng.randint(1, 40))] for _ in range(1000)]
    max_tokens = [rng.randint(1, 24) for _ in range(1000)]
    alloc = BlockAllocator(48, 4)
    result = simulate(schedule_step, alloc, BlockTable, prompts, max_tokens, max_num_seqs=8,
                      max_num_batched_tokens=32, cancel_prob=0.05, seed=1)
    want = sequential_outputs(prompts, max_tokens)
    done = [i for i, reason in enumerate(result.finish_reasons) if reason == "length"]
    assert len(done) + len(result.aborted) == 1000 and len(result.aborted) > 10
    assert all(result.outputs[i] == want[i] for i in done)
    assert all(result.outputs[i] == want[i][:len(result.outputs[i])] for i in result.aborted)
    assert result.preemptions > 0 and result.bookkeeping_errors == 0 and result.free_blocks_at_end == 48


def test_reservation_waste_and_slot_timelines():
    from course_utils.serving import WASTED, continuous_slots, reservation_waste, static_slots

    assert reservation_waste([16, 32], 64) == pytest.approx(1 - 48 / 128)
    assert reservation_waste([17, 32], 64, block_size=16) == pytest.approx(1 - 49 / 64)
    with pytest.raises(ValueError, match="exceeds max_len"):
        reservation_waste([65], 64)
    grid, order = continuous_slots([["a", "b"], ["a", "b", "c"], ["b", "c"], ["c", "d"]])
    assert order == ["a", "b", "c", "d"] and grid.tolist() == [[0, 1, -1], [0, 1, 2], [-1, 1, 2], [3, -1, 2]]
    static = static_slots([3, 1, 2], 2)
    assert static.shape == (5, 2) and (static == WASTED).sum() == 2  # request 1 waits for request 0


def test_workload_and_static_batching_baseline(smollm2):
    from course_utils.serving.workload import make_workload, run_engine, run_hf_static, shared_prefix_prompts

    model, tok = smollm2
    work = make_workload(tok, 6, prompt_len=(8, 24), output_len=(2, 9), seed=3)
    assert len(work) == 6 and all(8 <= len(w.prompt_ids) <= 24 and 2 <= w.max_tokens <= 9 for w in work)
    assert work == make_workload(tok, 6, prompt_len=(8, 24), output_len=(2, 9), seed=3)  # seeded
    static = run_hf_static(model, work, 4, pad_token_id=tok.pad_token_id or 0)
    assert static["output_tokens"] == sum(w.max_tokens for w in work) and 0 < static["wasted_fraction"] < 1
    ours = run_engine(LLMEngine(model, tok, num_blocks=64, block_size=8), work)
    assert ours["output_tokens"] == static["output_tokens"] and ours["kv_util_paged"] > ours["kv_util_contiguous"]
    convs = shared_prefix_prompts(tok, system_tokens=64, n=3)
    assert len({c[0]["content"] for c in convs}) == 1 and len({c[1]["content"] for c in convs}) == 3
