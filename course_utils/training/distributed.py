"""Data-parallel training of a TinyLlama for real, with ``torch.distributed`` (gloo on a CPU, NCCL on GPUs).

One function, :func:`train_strategy`, trains the same model on the same global batch of the
Python-documentation corpus under each strategy, in every rank of a process group:

* ``single``: one process, the whole batch (the reference the others must match);
* ``ddp``: ``DistributedDataParallel``; each rank computes the gradient of its slice of the batch
  and an all-reduce averages them (ZeRO stage 0: every rank holds every state);
* ``zero1``: DDP plus ``ZeroRedundancyOptimizer``: each rank keeps Adam's state for its share
  of the parameters only, updates those, and broadcasts them to the others (stage 1);
* ``fsdp2_zero2`` / ``fsdp2_zero3``: FSDP2 ``fully_shard`` on each layer, the embedding, the LM
  head and the root, with ``reshard_after_forward=False`` / ``True``. Parameters, gradients and
  optimizer state are sharded at rest; parameters are all-gathered before a layer runs. With
  ``False`` the gathered parameters stay until backward (ZeRO-2's memory for parameters during the
  step, no second all-gather); with ``True`` they are freed after forward and gathered again in
  backward (ZeRO-3).

Each run measures, per rank: bytes of parameters, gradients and optimizer state counted from the
tensors the rank holds (:func:`course_utils.training.memory.tensor_bytes`), parameters held between
forward and backward, the collectives of a step (:class:`course_utils.training.comm.CommCounter`),
the global loss of every step and the step time. :func:`expected_model_bytes` and
:func:`expected_comm_volume` give what the ZeRO formulas predict.

PyTorch issue #162338 reports that gloo's ``ReduceOp.AVG`` can sum instead of average (FSDP2
reduce-scatters fp32 gradients with AVG). :func:`gloo_avg_is_correct` tests it on the live process
group; when it fails, FSDP2 runs with ``set_force_sum_reduction_for_comms(True)`` (SUM, then divide).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from course_utils import checks
from course_utils.training.comm import CommCounter
from course_utils.training.memory import optimizer_state_tensors, tensor_bytes

STRATEGIES = ("single", "ddp", "zero1", "fsdp2_zero2", "fsdp2_zero3")
#: ZeRO stage of each strategy's model states at rest (after the optimizer step).
STAGE_AT_REST = {"single": 0, "ddp": 0, "zero1": 1, "fsdp2_zero2": 3, "fsdp2_zero3": 3}


@dataclass
class TrainConfig:
    """Model and run sizes; every rank builds the same model from the same seed."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int | None = None  # default: ≈ 8/3 · hidden, a multiple of 8
    seq_len: int = 64
    global_batch: int = 8  # split evenly over the ranks
    steps: int = 8
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1  # torch threads per rank

    def __post_init__(self) -> None:
        checks.positive_int(hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
                            seq_len=self.seq_len, global_batch=self.global_batch, steps=self.steps,
                            threads=self.threads)
        checks.positive_number(lr=self.lr)
        if self.intermediate_size is None:
            self.intermediate_size = max(8, int(round(8 * self.hidden_size / 3 / 8)) * 8)

    def model_config(self, vocab_size: int = 256):
        from course_utils.arch import TinyLlamaConfig

        return TinyLlamaConfig(vocab_size=vocab_size, hidden_size=self.hidden_size,
                               intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
                               num_attention_heads=self.num_heads, max_position_embeddings=max(2048, self.seq_len))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StrategyResult:
    """What one strategy measured (``per_rank`` lists are indexed by rank)."""

    strategy: str
    world_size: int
    num_params: int
    losses: list[float]  # global mean loss of each step
    step_seconds: float  # median over steps after the first
    params_bytes: list[int]  # held at rest, after the last step
    params_fwd_bytes: list[int]  # held between forward and backward
    grads_bytes: list[int]  # after backward
    optimizer_bytes: list[int]  # after the optimizer step
    comm_calls: dict[str, int] = field(default_factory=dict)  # per step, rank 0
    comm_bytes: dict[str, int] = field(default_factory=dict)  # per step, rank 0
    avg_workaround: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def init_process_group(backend: str = "gloo") -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``); without them, a group of one. Returns ``(rank, world_size)``."""
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_avg_is_correct() -> dict[str, bool]:
    """Whether ``ReduceOp.AVG`` averages (PyTorch #162338) for all-reduce and reduce-scatter on the
    current process group: rank ``r`` contributes ``r + 1``, the mean is ``(N + 1) / 2``."""
    world, rank = dist.get_world_size(), dist.get_rank()
    mean = (world + 1) / 2
    t = torch.full((4,), float(rank + 1))
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    out = torch.empty(2)
    reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor  # torch < 2.13
    reduce_scatter(out, torch.full((2 * world,), float(rank + 1)), op=dist.ReduceOp.AVG)
    return {"all_reduce": bool(torch.allclose(t, torch.tensor(mean))),
            "reduce_scatter": bool(torch.allclose(out, torch.tensor(mean)))}


def build_model(cfg: TrainConfig, vocab_size: int = 256, device: str = "cpu"):
    """The TinyLlama every strategy starts from (same seed, same weights on every rank)."""
    from course_utils.arch import TinyLlama

    torch.manual_seed(cfg.seed)
    return TinyLlama(cfg.model_config(vocab_size)).to(device)


def wrap(model: torch.nn.Module, strategy: str, cfg: TrainConfig, *, force_sum: bool = False):
    """Wrap ``model`` for ``strategy`` and build its AdamW; returns ``(model, optimizer)``."""
    checks.one_of("strategy", strategy, STRATEGIES)
    adam = {"lr": cfg.lr, "betas": (0.9, 0.95), "weight_decay": 0.1}
    if strategy in ("ddp", "zero1"):
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, gradient_as_bucket_view=True)  # grads are views of the buckets
    if strategy.startswith("fsdp2"):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        device_type = next(model.parameters()).device.type
        mesh = init_device_mesh(device_type, (dist.get_world_size(),))
        reshard = strategy == "fsdp2_zero3"
        for module in [model.embed_tokens, *model.layers, model.lm_head]:
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
        model.set_force_sum_reduction_for_comms(force_sum)
    if strategy == "zero1":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, **adam)
    return model, torch.optim.AdamW(model.parameters(), **adam)


def batches(corpus_ids: torch.Tensor, cfg: TrainConfig, device: str = "cpu"):
    """The global batches of the run: the same on every rank (same seeded generator)."""
    from course_utils.text_corpus import sample_batch

    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.steps):
        yield sample_batch(corpus_ids, cfg.global_batch, cfg.seq_len, generator=gen, device=device)


def train_strategy(strategy: str, cfg: TrainConfig, corpus_ids: torch.Tensor, *, vocab_size: int = 256,
                   device: str = "cpu", force_sum: bool = False) -> StrategyResult | None:
    """Train under ``strategy`` in every rank of the current process group and measure it.

    Collective: every rank calls it. ``single`` trains on rank 0 alone while the others wait.
    Returns the :class:`StrategyResult` on rank 0, ``None`` elsewhere.
    """
    checks.one_of("strategy", strategy, STRATEGIES)
    rank, world = dist.get_rank(), dist.get_world_size()
    if strategy == "single":
        result = _train(strategy, cfg, corpus_ids, vocab_size, device, 0, 1, force_sum) if rank == 0 else None
        dist.barrier()
        return result
    if cfg.global_batch % world:
        raise ValueError(f"global_batch={cfg.global_batch} must be divisible by the world size {world}")
    result = _train(strategy, cfg, corpus_ids, vocab_size, device, rank, world, force_sum)
    # gather every rank's memory to rank 0
    mine = [result.params_bytes[0], result.params_fwd_bytes[0], result.grads_bytes[0], result.optimizer_bytes[0]]
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank != 0:
        return None
    result.params_bytes, result.params_fwd_bytes, result.grads_bytes, result.optimizer_bytes = (
        [row[i] for row in everyone] for i in range(4))
    return result


def _train(strategy, cfg, corpus_ids, vocab_size, device, rank, world, force_sum) -> StrategyResult:
    model = build_model(cfg, vocab_size, device)
    num_params = sum(p.numel() for p in model.parameters())
    model, opt = wrap(model, strategy, cfg, force_sum=force_sum)
    rows = cfg.global_batch // world
    losses, times = [], []
    comm = CommCounter()
    for step, (x, y) in enumerate(batches(corpus_ids, cfg, device)):
        x, y = x[rank * rows:(rank + 1) * rows], y[rank * rows:(rank + 1) * rows]
        last = step == cfg.steps - 1
        held = list(model.parameters())  # at rest: the shards (FSDP2) or the full tensors
        counter = comm if last else CommCounter()
        start = time.perf_counter()
        with counter:
            logits = model(x)
            if last:
                params_fwd = tensor_bytes(held + list(model.parameters()))
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            loss.backward()
            if last:
                grads = tensor_bytes(p.grad for p in model.parameters())
            opt.step()
            opt.zero_grad(set_to_none=not last)  # keep the last gradients to count them
        times.append(time.perf_counter() - start)
        global_loss = loss.detach().clone()
        if world > 1:  # the logged loss is averaged outside the counted step
            dist.all_reduce(global_loss)
            global_loss /= world
        losses.append(global_loss.item())
    return StrategyResult(
        strategy=strategy, world_size=world, num_params=num_params, losses=losses,
        step_seconds=statistics.median(times[1:] or times),
        params_bytes=[tensor_bytes(model.parameters())], params_fwd_bytes=[params_fwd], grads_bytes=[grads],
        optimizer_bytes=[tensor_bytes(optimizer_state_tensors(opt))],
        comm_calls=dict(comm.calls), comm_bytes=dict(comm.bytes), avg_workaround=force_sum)


def expected_model_bytes(strategy: str, num_params: int, world_size: int) -> dict[str, float]:
    """ZeRO's fp32 Adam formulas for ``strategy`` (:data:`STAGE_AT_REST`): bytes per rank of
    parameters at rest and between forward and backward, gradients and optimizer state."""
    from course_utils.training.memory import model_state_bytes

    checks.one_of("strategy", strategy, STRATEGIES)
    n = 1 if strategy == "single" else world_size
    rest = model_state_bytes(num_params, n, STAGE_AT_REST[strategy], "fp32")
    full = 4 * num_params
    fwd = {"fsdp2_zero2": full + full / n, "fsdp2_zero3": full / n}.get(strategy, full)
    return {"params": rest.params, "params_fwd": fwd, "grads": rest.grads, "optimizer": rest.optimizer}


def expected_comm_volume(strategy: str, num_params: int) -> float:
    """ZeRO paper's communication volume per step in bytes (fp32, ``P = 4Ψ``): DDP ``2P``;
    PyTorch's ZeRO-1 ``2P`` all-reduce plus ``P`` broadcast; FSDP2 ``P`` all-gather plus ``P``
    reduce-scatter, and ZeRO-3 a second ``P`` all-gather in backward."""
    checks.one_of("strategy", strategy, STRATEGIES)
    return 4 * num_params * {"single": 0, "ddp": 2, "zero1": 3, "fsdp2_zero2": 2, "fsdp2_zero3": 3}[strategy]


def comm_volume(result: StrategyResult) -> float:
    """The measured volume of ``result`` (all-reduce bytes count twice)."""
    from course_utils.training.comm import VOLUME_FACTOR

    return sum(VOLUME_FACTOR[k] * b for k, b in result.comm_bytes.items())


def relative_gap(a: float, b: float) -> float:
    """``|a − b| / |b|``."""
    return abs(a - b) / abs(b) if b else math.inf
