"""course_utils.training: ZeRO formulas (the paper's Figure 1), tiled attention against SDPA, every
data-parallel strategy in two real gloo processes against one process, checkpointing, ZeRO-1 by hand."""

from __future__ import annotations

import math
import textwrap

import psutil
import pytest
import torch
import torch.nn.functional as F

from course_utils.arch import TinyLlama, TinyLlamaConfig
from course_utils.training import (
    CommCounter,
    PeakMemory,
    activation_bytes_per_layer,
    checkpointed_activation_bytes,
    classify,
    comm_volume,
    expected_comm_volume,
    expected_model_bytes,
    fp16_underflow,
    measure_checkpointing,
    model_state_bytes,
    naive_attention,
    online_softmax,
    partition_parameters,
    peak_memory,
    relative_gap,
    ring_bytes_sent,
    saved_activation_bytes,
    single_process_adamw,
    tensor_bytes,
    tiled_attention,
    torchrun,
    train_steps,
    training_flops_per_token,
    validate_accelerate_config,
    zero_table,
)
from course_utils.training.launch import launch_file
from course_utils.training.zero import _function_spec


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _children() -> list[int]:
    """Live child processes, except multiprocessing's resource tracker (started by the first
    ``spawn``, it lives as long as this process by design)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.NoSuchProcess:
            continue
    return out


# --- memory formulas ---------------------------------------------------------------------------

def test_zero_paper_figure_1():
    """Rajbhandari et al., Figure 1: Ψ = 7.5B, N_d = 64, K = 12 → 120, 31.4, 16.6, 1.9 GB."""
    row = zero_table(7.5e9, [64])[0]
    assert [round(row[f"stage{s}_GB"], 1) for s in range(4)] == [120.0, 31.4, 16.6, 1.9]
    assert model_state_bytes(7.5e9, 64, 1).optimizer == pytest.approx(12 * 7.5e9 / 64)


def test_model_state_bytes_fp32_and_stages():
    assert model_state_bytes(10, 1, 0, "fp32").as_dict() == {"params": 40, "grads": 40, "optimizer": 80, "total": 160}
    s2 = model_state_bytes(100, 4, 2, "fp32")
    assert (s2.params, s2.grads, s2.optimizer) == (400, 100, 200)
    assert model_state_bytes(100, 4, 3, "fp32").total == pytest.approx(1600 / 4)
    for stage in range(4):  # every stage is exact at N = 1
        assert model_state_bytes(100, 1, stage).total == 1600
    rows = zero_table(70e9, [8, 64])
    assert rows[0]["stage3_GB"] == pytest.approx(140.0) and rows[1]["stage0_GB"] == pytest.approx(1120.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_params": 1, "world_size": 0}, "world_size"), ({"num_params": 1, "stage": 4}, "stage"),
    ({"num_params": 1, "precision": "fp8"}, "precision"), ({"num_params": -1}, "num_params")])
def test_model_state_bytes_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        model_state_bytes(**kwargs)


def test_activation_formulas():
    # Korthikanti et al. eq. 1: s·b·h·(34 + 5as/h); FlashAttention drops the 5as²b term
    assert activation_bytes_per_layer(2048, 1, 12288, 96) == 2048 * 12288 * (34 + 5 * 96 * 2048 / 12288)
    assert activation_bytes_per_layer(2048, 1, 12288, 96, flash_attention=True) == 2048 * 12288 * 34
    assert checkpointed_activation_bytes(16, 10.0, 1.0, None) == 160
    assert checkpointed_activation_bytes(16, 10.0, 1.0, 4) == 4 * 1 + 4 * 10
    # with A = B (Chen et al.'s setting) the best segment is √L
    best = min(range(1, 17), key=lambda k: checkpointed_activation_bytes(16, 1.0, 1.0, k))
    assert best == 4
    with pytest.raises(ValueError, match="segment_size"):
        checkpointed_activation_bytes(4, 1.0, 1.0, 0)


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(10, 4)
    assert tensor_bytes([a, a[0], a.view(40), None]) == 160
    assert tensor_bytes([a, torch.zeros(3, dtype=torch.float16)]) == 166
    with pytest.raises(TypeError, match="tensors"):
        tensor_bytes([a, "x"])


def test_saved_activation_bytes_excludes_parameters():
    lin = torch.nn.Linear(8, 16, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    out, saved = saved_activation_bytes(lambda: lin(x), exclude=lin.parameters())
    assert saved == x.numel() * 4  # a linear layer saves its input (and its weight, excluded)
    _, with_weight = saved_activation_bytes(lambda: lin(x))
    assert with_weight == saved + lin.weight.numel() * 4


def test_peak_memory_follows_allocations_and_frees():
    def work():
        a = torch.ones(1000)  # 4000 B
        b = a * 2  # +4000 B: peak 8000
        del a, b
        return torch.ones(10)  # 40 B alive at the end
    with PeakMemory() as tracker:
        out = work()
    assert tracker.peak == 8000 and tracker.current == 40 and out.numel() == 10


# --- attention ---------------------------------------------------------------------------------

def test_online_softmax_matches_softmax():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 301, generator=gen) * 20  # large logits: the running max matters
    torch.testing.assert_close(online_softmax(x, block_size=64), torch.softmax(x, dim=-1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="block_size"):
        online_softmax(x, block_size=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 100, 257])
def test_tiled_attention_matches_sdpa_forward_and_backward(causal, n):
    gen = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(2, 3, n, 16, generator=gen, requires_grad=True) for _ in range(3))
    ours = tiled_attention(q, k, v, causal=causal, block_q=64, block_k=48)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(ours.shape, generator=gen)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_tiled_attention_fewer_queries_than_keys_and_bf16():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 30, 8, generator=gen)
    k, v = torch.randn(1, 2, 90, 8, generator=gen), torch.randn(1, 2, 90, 8, generator=gen)
    torch.testing.assert_close(tiled_attention(q, k, v, causal=True, block_q=16, block_k=16),
                               naive_attention(q, k, v, causal=True), rtol=1e-5, atol=1e-5)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    torch.testing.assert_close(tiled_attention(qb, kb, vb).float(),
                               F.scaled_dot_product_attention(qb, kb, vb).float(), rtol=2e-2, atol=2e-2)


def test_tiled_attention_rejects_bad_input():
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="head_dim"):
        tiled_attention(q, torch.randn(1, 4, 6), torch.randn(1, 4, 6))
    with pytest.raises(TypeError, match="q"):
        tiled_attention(q.long(), q, q)
    with pytest.raises(ValueError, match="block_q"):
        tiled_attention(q, q, q, block_q=0)


def test_tiled_attention_memory_is_linear():
    gen = torch.Generator().manual_seed(0)
    peaks = {}
    for n in (512, 1024):
        q, k, v = (torch.randn(1, 1, n, 32, generator=gen) for _ in range(3))
        peaks[n] = (peak_memory(lambda: naive_attention(q, k, v, causal=True))[1],  # noqa: B023
                    peak_memory(lambda: tiled_attention(q, k, v, causal=True, block_q=128, block_k=128))[1])  # noqa: B023
    assert peaks[1024][0] >= 3.5 * peaks[512][0]  # N² : four times the memory for twice the length
    assert peaks[1024][1] <= 2.5 * peaks[512][1]  # N
    assert peaks[1024][0] >= 5 * peaks[1024][1]


# --- checkpointing, precision, MFU -------------------------------------------------------------

def tiny_config(layers: int = 4) -> TinyLlamaConfig:
    return TinyLlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=88, num_hidden_layers=layers,
                           num_attention_heads=4)


def test_checkpointing_same_gradients_fewer_saved_bytes():
    rows = measure_checkpointing(tiny_config(4), [None, 1, 2, 4], batch_size=2, seq_len=32, repeats=1)
    by = {r["segment"]: r for r in rows}
    assert all(r["grad_max_diff"] == 0.0 for r in rows)  # recomputation repeats the same operations
    assert by[1]["saved_bytes"] * 3 <= by[0]["saved_bytes"]
    boundary = 2 * 32 * 32 * 4  # one segment input: batch·seq·hidden fp32
    assert by[1]["saved_bytes"] - by[4]["saved_bytes"] == 3 * boundary  # 4 segment inputs vs 1
    assert by[2]["saved_bytes"] == pytest.approx(by[2]["predicted_saved"])


def test_gradient_checkpointing_enable_rejects_bad_segment():
    with pytest.raises(ValueError, match="segment_size"):
        TinyLlama(tiny_config(2)).gradient_checkpointing_enable(0)


def test_mixed_precision_bf16_close_to_fp32_and_fp16_scaler_runs():
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 64, (2, 16), generator=gen), torch.randint(0, 64, (2, 16), generator=gen))
               for _ in range(3)]
    runs = {}
    for mode in ("fp32", "bf16", "fp16"):
        torch.manual_seed(0)
        runs[mode] = train_steps(TinyLlama(tiny_config(2)), batches, mode)
    assert relative_gap(runs["bf16"]["losses"][0], runs["fp32"]["losses"][0]) < 0.02
    assert runs["bf16"]["saved_bytes"] < runs["fp32"]["saved_bytes"]
    assert runs["fp16"]["final_scale"] > 0 and all(math.isfinite(x) for x in runs["fp16"]["losses"])


def test_fp16_underflow_and_loss_scaling():
    g = torch.tensor([1e-9, 1e-8, 1e-3, 0.0, 1.0])
    assert fp16_underflow(g) == {"underflow": 0.5, "overflow": 0.0}  # 1e-9 and 1e-8 < 2^-24/2 flush to 0
    assert fp16_underflow(g, scale=2.0 ** 16)["underflow"] == 0.0
    assert fp16_underflow(g, scale=2.0 ** 17)["overflow"] == 0.25  # 1.0·2^17 > 65504


def test_training_flops_per_token():
    model = TinyLlama(tiny_config(2))
    per_layer = 4 * 32 * 32 + 3 * 32 * 88
    assert training_flops_per_token(model, 16) == 6 * (2 * per_layer + 64 * 32) + 12 * 2 * 4 * 8 * 16


# --- communication accounting ------------------------------------------------------------------

def test_classify_collectives():
    t = torch.zeros(10)  # 40 B
    assert classify("c10d.allreduce_.default", ([t],)) == ("all_reduce", 40)
    assert classify("c10d._allgather_base_.default", (torch.zeros(20), t)) == ("all_gather", 80)
    assert classify("c10d._reduce_scatter_base_.default", (t, torch.zeros(20))) == ("reduce_scatter", 80)
    assert classify("c10d.broadcast_.default", ([t, t],)) == ("broadcast", 80)
    assert classify("aten.mm.default", (t,)) is None
    assert ring_bytes_sent(100, 4) == 75


# --- real distributed runs: two gloo ranks under torchrun --------------------------------------

STEPS = 4


@pytest.fixture(scope="module")
def report():
    before = _children()
    strategies = "single,ddp,zero1,fsdp2_zero2,fsdp2_zero3,fsdp2_zero3+sum"
    out = torchrun(["--strategies", strategies, "--steps", str(STEPS), "--hidden-size", "32", "--num-layers", "2",
                    "--num-heads", "4", "--seq-len", "32", "--global-batch", "4"], nproc=2, echo=False, timeout=300)
    assert _children() == before, "torchrun left processes behind"
    return out


def _by(report):
    """Results by strategy name; a run with the SUM workaround forced gets a ``+sum`` suffix."""
    return {r["strategy"] + ("+sum" if r["avg_workaround"] and not report["avg_workaround"] else ""): r
            for r in report["results"]}


def test_every_strategy_matches_single_process(report):
    runs = _by(report)
    single = runs["single"]["losses"]
    assert len(single) == STEPS
    for name, r in runs.items():
        for a, b in zip(r["losses"], single):
            assert relative_gap(a, b) < 1e-5, (name, r["losses"], single)
        assert relative_gap(r["losses"][-1], single[-1]) < 1e-3


def test_gloo_avg_parity_was_checked(report):
    assert set(report["avg_correct"]) == {"all_reduce", "reduce_scatter"}
    assert report["avg_workaround"] == (not all(report["avg_correct"].values()))


def _fsdp_shard_bytes(world: int) -> int:
    from course_utils.training.distributed import TrainConfig, build_model

    cfg = TrainConfig(hidden_size=32, num_layers=2, num_heads=4)
    return sum(4 * math.ceil(p.shape[0] / world) * (p.numel() // p.shape[0]) for p in build_model(cfg).parameters())


def test_per_rank_bytes_match_the_formulas(report):
    runs = _by(report)
    psi = runs["ddp"]["num_params"]
    n_tensors = 2 + 2 * 9 + 1  # embed, head; per layer 4 attn + 3 mlp + 2 norms; final norm
    for name in ("single", "ddp"):
        r = runs[name]
        assert set(r["params_bytes"]) == {4 * psi} and set(r["grads_bytes"]) == {4 * psi}
        assert set(r["optimizer_bytes"]) == {8 * psi + 4 * n_tensors}  # m, v and a step scalar per tensor
    z1 = runs["zero1"]
    assert sum(z1["optimizer_bytes"]) == 8 * psi + 4 * n_tensors  # partitioned, nothing duplicated
    assert max(z1["optimizer_bytes"]) <= 0.55 * runs["ddp"]["optimizer_bytes"][0]
    assert set(z1["grads_bytes"]) == {4 * psi}  # stage 1 keeps full gradients
    shard = _fsdp_shard_bytes(2)
    for name in ("fsdp2_zero2", "fsdp2_zero3"):
        r = runs[name]
        assert set(r["params_bytes"]) == {shard} and set(r["grads_bytes"]) == {shard}
        assert set(r["optimizer_bytes"]) == {2 * shard + 4 * n_tensors}
        assert shard == pytest.approx(expected_model_bytes(name, psi, 2)["params"], rel=0.01)
    assert set(runs["fsdp2_zero2"]["params_fwd_bytes"]) == {4 * psi + shard}  # gathered + own shard
    assert set(runs["fsdp2_zero3"]["params_fwd_bytes"]) == {shard}  # resharded after forward


def test_communication_matches_theory(report):
    runs = _by(report)
    psi = runs["ddp"]["num_params"]
    shard2 = 2 * _fsdp_shard_bytes(2)  # the padded full size FSDP2 gathers
    assert runs["single"]["comm_bytes"] == {}
    assert runs["ddp"]["comm_bytes"] == {"all_reduce": 4 * psi}
    assert runs["zero1"]["comm_bytes"] == {"all_reduce": 4 * psi, "broadcast": 4 * psi}
    assert runs["fsdp2_zero2"]["comm_bytes"] == {"all_gather": shard2, "reduce_scatter": shard2}
    assert runs["fsdp2_zero3"]["comm_bytes"] == {"all_gather": 2 * shard2, "reduce_scatter": shard2}
    for name in ("ddp", "zero1", "fsdp2_zero2", "fsdp2_zero3"):
        from course_utils.training.distributed import StrategyResult

        measured = comm_volume(StrategyResult(**runs[name]))
        assert measured == pytest.approx(expected_comm_volume(name, psi), rel=0.01)


def test_fsdp2_sum_workaround_also_matches(report):
    """The workaround for PyTorch #162338 (SUM then divide) gives the same losses."""
    runs = _by(report)
    forced = [r for r in report["results"] if r["strategy"] == "fsdp2_zero3" and r["avg_workaround"]]
    assert forced, "the +sum run is missing"
    assert relative_gap(forced[0]["losses"][-1], runs["single"]["losses"][-1]) < 1e-5


def test_torchrun_failure_and_timeout_leave_no_process(tmp_path):
    before = _children()
    failing = tmp_path / "fails.py"
    failing.write_text("import sys\nprint('rank failing on purpose')\nsys.exit(3)\n")
    with pytest.raises(RuntimeError, match="failing on purpose"):
        torchrun([], script=failing, echo=False, timeout=120)
    assert _children() == before
    hangs = tmp_path / "hangs.py"
    hangs.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(TimeoutError):
        torchrun([], script=hangs, echo=False, timeout=8)
    assert _children() == before


def test_comm_counter_outside_a_process_group_counts_nothing():
    with CommCounter() as comm:
        torch.ones(3) @ torch.ones(3)
    assert comm.volume() == 0 and dict(comm.calls) == {}


# --- ZeRO-1 by hand (the lab's reference) ------------------------------------------------------

def test_partition_parameters():
    assert partition_parameters([64, 64, 8, 4, 4], 2) == [0, 1, 0, 1, 1]
    assert partition_parameters([6], 2) == [0]  # rank 1 owns nothing
    assert partition_parameters([], 3) == []
    assert partition_parameters([5, 5, 5], 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="world_size"):
        partition_parameters([1], 0)
    with pytest.raises(ValueError, match=r"numels\[1\]"):
        partition_parameters([1, -2], 2)


def test_zero1_by_hand_from_source_text_matches_adamw(tmp_path):
    """ZeRO-1 by hand in two gloo ranks, with the partition function given as source text (as a
    notebook function travels): parity with single-process AdamW, same weights on both ranks, half the
    Adam state per rank; uneven sizes; one parameter for two ranks (rank 1 holds nothing)."""
    from course_utils.training import run_zero1_cases, zero
    from course_utils.training.zero import partition_parameters as reference_partition

    src = tmp_path / "student_cell.py"
    src.write_text(textwrap.dedent("""
        def my_partition(numels, world_size):
            load = [0] * world_size
            owners = [0] * len(numels)
            for i in sorted(range(len(numels)), key=lambda i: (-numels[i], i)):
                rank = min(range(world_size), key=lambda r: (load[r], r))
                owners[i] = rank
                load[rank] += numels[i]
            return owners
    """))
    namespace: dict = {"__name__": "not_importable_module"}
    exec(compile(src.read_text(), str(src), "exec"), namespace)
    my_partition = namespace["my_partition"]
    assert _function_spec(my_partition)[0] == "source"
    cases = [{"shapes": ((8, 8), (4, 16), (8,), (4,), (4,)), "steps": 4, "weight_decay": 0.1},
             {"shapes": ((5, 3), (7,), (2, 2), (11,)), "steps": 3, "lr": 0.02},
             {"shapes": ((6,),), "steps": 3}]
    before = _children()
    results = run_zero1_cases(zero.zero1_step, my_partition, cases)
    assert _children() == before
    for case, r in zip(cases, results):
        want = single_process_adamw(case["shapes"], steps=case["steps"], lr=case.get("lr", 0.05),
                                    weight_decay=case.get("weight_decay", 0.0))
        for got, ref in zip(r["params"], want):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        assert r["rank_spread"] == 0.0  # the broadcast leaves every rank with the same weights
        assert r["owners"] == reference_partition([math.prod(s) for s in case["shapes"]], 2)
        assert sum(r["state_bytes"]) == 8 * sum(math.prod(s) for s in case["shapes"])
    total = sum(math.prod(s) for s in cases[0]["shapes"])
    assert results[0]["state_bytes"] == [4 * total, 4 * total]  # 8 B × Ψ/2 on each rank
    assert results[1]["owned_numel"] == [19, 18]  # 15 + 4 against 7 + 11
    assert results[2]["state_bytes"] == [48, 0] and results[2]["owned_numel"] == [6, 0]


def test_a_nested_function_travels_as_source():
    def step(params, owners, state, **kw):
        return None
    kind, source, name = _function_spec(step)
    assert (kind, name) == ("source", "step") and source.startswith("def step(")


# --- launch configs ----------------------------------------------------------------------------

def test_launch_files_exist_and_accelerate_config_parses():
    for name in ("train_distributed.py", "ds_zero3.json", "ds_zero2.json", "accelerate_fsdp2.yaml",
                 "torchrun_multinode.sh", "train.sbatch"):
        assert launch_file(name).is_file()
    cfg = validate_accelerate_config(launch_file("accelerate_fsdp2.yaml"))
    assert cfg["fsdp_version"] == 2 and cfg["reshard_after_forward"] is True and cfg["num_processes"] == 2


def test_deepspeed_zero3_config_parses():
    pytest.importorskip("deepspeed")
    from course_utils.training import validate_deepspeed_config

    out = validate_deepspeed_config(launch_file("ds_zero3.json"), micro_batch=4, grad_accum=2)
    assert out["zero_stage"] == 3 and out["train_batch_size"] == 8


# --- CUDA (GPU runners only) -------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_tiled_attention_fp16_scaler_and_peak_memory():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 1024, 64, generator=gen).cuda().half() for _ in range(3))
    torch.testing.assert_close(tiled_attention(q, k, v, causal=True).float(),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True).float(), rtol=2e-3, atol=2e-3)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    naive_attention(q, k, v, causal=True)
    naive_peak = torch.cuda.max_memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    tiled_attention(q, k, v, causal=True)
    assert naive_peak > 4 * (torch.cuda.max_memory_allocated() - base)
    batches = [(torch.randint(0, 64, (2, 16), generator=gen).cuda(), torch.randint(0, 64, (2, 16), generator=gen).cuda())
               for _ in range(3)]
    torch.manual_seed(0)
    run = train_steps(TinyLlama(tiny_config(2)).cuda(), batches, "fp16", device="cuda")
    assert run["final_scale"] > 0 and all(math.isfinite(x) for x in run["losses"])
