"""ZeRO-1 by hand (lab 09): shard Adam's state over the ranks, update a shard, broadcast it back.

Data parallelism keeps a full copy of the optimizer state on every rank: ``8Ψ`` bytes of Adam
moments in fp32, twice the parameters. ZeRO stage 1 gives each of the ``N`` ranks the state of
about ``Ψ/N`` parameters. Each step:

1. every rank computes the gradient of its own slice of the batch, and an all-reduce averages the
   gradients (SUM, then divide by ``N``: gloo's AVG has had a correctness bug, PyTorch #162338);
2. each rank runs Adam only on the parameters it owns, creating their moments on first use;
3. each parameter is broadcast from its owner, so every rank again holds the same weights.

:func:`partition_parameters` decides the owners (largest tensor first, to the least-loaded rank),
:func:`zero1_step` is one step, and :func:`run_zero1` / :func:`run_zero1_cases` train small
least-squares models with a step function in ``world_size`` real gloo processes and report what each
rank holds.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import inspect
import math
import os
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from course_utils import checks


def partition_parameters(numels: Sequence[int], world_size: int) -> list[int]:
    """Owner rank of each parameter, balancing the number of elements per rank greedily: parameters
    in decreasing size (ties: lower index first) each go to the rank with the fewest elements so far
    (ties: lower rank). A rank may own nothing when there are fewer parameters than ranks."""
    checks.positive_int(world_size=world_size)
    for i, n in enumerate(numels):
        checks.non_negative_int(**{f"numels[{i}]": n})
    load = [0] * world_size
    owners = [0] * len(numels)
    for i in sorted(range(len(numels)), key=lambda i: (-numels[i], i)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[i] = rank
        load[rank] += numels[i]
    return owners


def zero1_step(params: list[torch.Tensor], owners: list[int], state: dict[int, dict[str, Any]], *, lr: float,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """One ZeRO-1 AdamW step in the current process group (call it on every rank, after backward).

    ``params[i].grad`` holds this rank's gradient; ``owners[i]`` is the rank that updates
    ``params[i]``; ``state`` is this rank's optimizer state, ``{i: {"step": t, "exp_avg": m,
    "exp_avg_sq": v}}`` for the parameters it owns only. AdamW (as ``torch.optim.AdamW``)::

        g = mean over ranks of the gradients;  p ← p·(1 − lr·wd)
        m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
        p ← p − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε)
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    if len(owners) != len(params):
        raise ValueError(f"owners has {len(owners)} entries for {len(params)} params")
    beta1, beta2 = betas
    with torch.no_grad():
        for p in params:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world
        for i, p in enumerate(params):
            if owners[i] != rank:
                continue
            s = state.setdefault(i, {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)})
            s["step"] += 1
            p.mul_(1 - lr * weight_decay)
            s["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
            s["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = s["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** s["step"]) + eps
            p.addcdiv_(s["exp_avg"], denom, value=-lr / (1 - beta1 ** s["step"]))
        for i, p in enumerate(params):
            dist.broadcast(p, src=owners[i])


# --- running a step function in real processes -------------------------------------------------

def _function_spec(fn: Callable) -> tuple[str, str, str]:
    """How a worker process gets ``fn``: by import path when it lives in an importable module, else
    by its source text (a function defined in a notebook cell cannot be pickled for ``spawn``)."""
    module = getattr(fn, "__module__", None)
    if module and module != "__main__":
        with contextlib.suppress(Exception):
            if getattr(importlib.import_module(module), fn.__qualname__) is fn:
                return "import", module, fn.__qualname__
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as err:
        raise ValueError(f"cannot read the source of {fn!r}; define it with `def` in a notebook cell or a file") from err
    return "source", source, fn.__name__


def _load_function(spec: tuple[str, str, str]) -> Callable:
    kind, where, name = spec
    if kind == "import":
        obj: Any = importlib.import_module(where)
        for attr in name.split("."):
            obj = getattr(obj, attr)
        return obj
    namespace: dict[str, Any] = {"__name__": "__student__", "torch": torch, "dist": dist, "math": math}
    exec(compile(where, f"<{name}>", "exec"), namespace)  # the student's own cell, in the worker
    return namespace[name]


def problem(shapes: Sequence[Sequence[int]], world_size: int, rows_per_rank: int = 8, seed: int = 0):
    """The least-squares problem :func:`run_zero1` trains: initial parameters of ``shapes`` and, per
    rank, inputs ``X_r`` (rows × Σ numel) and targets ``y_r``. The model is ``ŷ = X · concat(params)``
    and each rank's loss the mean squared error on its rows."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(*shape, generator=gen) for shape in shapes]
    total = sum(p.numel() for p in params)
    xs = [torch.randn(rows_per_rank, total, generator=gen) for _ in range(world_size)]
    ys = [torch.randn(rows_per_rank, generator=gen) for _ in range(world_size)]
    return params, xs, ys


def _loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    flat = torch.cat([p.flatten() for p in params])
    return ((x @ flat - y) ** 2).mean()


def single_process_adamw(shapes: Sequence[Sequence[int]], *, world_size: int = 2, steps: int = 5, lr: float = 0.05,
                         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                         seed: int = 0) -> list[torch.Tensor]:
    """What :func:`run_zero1` must reproduce: ``torch.optim.AdamW`` in one process on the mean of
    the ranks' losses (the same global batch)."""
    params, xs, ys = problem(shapes, world_size, seed=seed)
    params = [p.requires_grad_() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    for _ in range(steps):
        loss = sum(_loss(params, x, y) for x, y in zip(xs, ys)) / world_size
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach() for p in params]


def _worker(rank: int, world_size: int, port: int, spec, cases: list[dict[str, Any]], out_dir: str) -> None:
    out = Path(out_dir)
    with open(out / f"rank{rank}.log", "w") as log:  # the rank's own stdout/stderr, C++ warnings included:
        os.dup2(log.fileno(), 1)  # a notebook would show them as the cell's stderr, which nbgrader
        os.dup2(log.fileno(), 2)  # scores as a failure; run_zero1_cases passes them on as stdout
    try:
        torch.set_num_threads(1)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if sys.platform.startswith("linux"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, also inside a network-less sandbox
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
        try:
            step_fn, partition_fn = _load_function(spec[0]), _load_function(spec[1])
            results = []
            for case in cases:
                params, xs, ys = problem(case["shapes"], world_size, seed=case["seed"])
                params = [p.requires_grad_() for p in params]
                owners = [int(o) for o in partition_fn([p.numel() for p in params], world_size)]
                state: dict[int, dict[str, Any]] = {}
                for _ in range(case["steps"]):
                    for p in params:
                        p.grad = None
                    _loss(params, xs[rank], ys[rank]).backward()
                    step_fn(params, owners, state, **case["hyper"])
                held = [t for s in state.values() for t in s.values() if isinstance(t, torch.Tensor)]
                results.append({"params": [p.detach().clone() for p in params], "owners": owners,
                                "state_bytes": sum(t.numel() * t.element_size() for t in held),
                                "owned_numel": sum(p.numel() for i, p in enumerate(params) if owners[i] == rank)})
            torch.save(results, out / f"rank{rank}.tmp")
            os.replace(out / f"rank{rank}.tmp", out / f"rank{rank}.pt")
        finally:
            dist.destroy_process_group()
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())


def run_zero1(step_fn: Callable = zero1_step, partition_fn: Callable = partition_parameters, *,
              shapes: Sequence[Sequence[int]] = ((8, 8), (4, 16), (8,), (4,), (4,)), world_size: int = 2, steps: int = 5,
              lr: float = 0.05, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0, seed: int = 0, timeout: float = 180) -> dict[str, Any]:
    """Train the :func:`problem` of ``shapes`` for ``steps`` with ``step_fn`` (signature of
    :func:`zero1_step`) and ``partition_fn`` in ``world_size`` gloo processes started with ``spawn``
    (one case of :func:`run_zero1_cases`)."""
    case = {"shapes": shapes, "steps": steps, "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "seed": seed}
    return run_zero1_cases(step_fn, partition_fn, [case], world_size=world_size, timeout=timeout)[0]


def run_zero1_cases(step_fn: Callable, partition_fn: Callable, cases: Sequence[dict[str, Any]], *,
                    world_size: int = 2, timeout: float = 180) -> list[dict[str, Any]]:
    """Run several ZeRO-1 trainings in one pair of processes (starting processes is the slow part).

    Each case is a dict with ``shapes`` and optionally ``steps`` (5), ``lr`` (0.05), ``betas``,
    ``eps``, ``weight_decay`` (0) and ``seed`` (0). The functions reach the workers by import path,
    or, when defined in a notebook, as source text executed there (they may use ``torch``, ``dist``
    and ``math``; anything else must be imported inside them). Each rank writes its results to a
    file of a temporary folder (no shared-memory queue, so it also runs in a sandbox without
    ``/dev/shm``). Per case it returns rank 0's final parameters, the largest difference between
    ranks' copies, the owners, and each rank's optimizer-state bytes and owned element count. All
    workers are ended before it returns: a rank's error is raised here with its traceback (the others
    are stopped rather than left waiting for a collective that will not come).
    """
    import torch.multiprocessing as mp

    checks.positive_int(world_size=world_size)
    checks.positive_number(timeout=timeout)
    checks.non_empty("cases", cases)
    clean = []
    for i, case in enumerate(cases):
        if not case.get("shapes"):
            raise ValueError(f"cases[{i}] needs 'shapes': a list of at least one parameter shape")
        c = {"steps": 5, "lr": 0.05, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "seed": 0, **case}
        checks.positive_int(steps=c["steps"])
        checks.positive_number(lr=c["lr"])
        clean.append({"shapes": [tuple(s) for s in c["shapes"]], "steps": c["steps"], "seed": c["seed"],
                      "hyper": {"lr": c["lr"], "betas": tuple(c["betas"]), "eps": c["eps"],
                                "weight_decay": c["weight_decay"]}})
    from course_utils.training.distributed import _free_port

    spec = (_function_spec(step_fn), _function_spec(partition_fn))
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="llm-course-zero1-") as tmp:
        out = Path(tmp)
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(r, world_size, port, spec, clean, tmp), daemon=True)
                 for r in range(world_size)]
        deadline = time.monotonic() + timeout
        try:
            for p in procs:
                p.start()
            while any(p.is_alive() for p in procs):
                if any(out.glob("rank*.err")) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join()
        for r in range(world_size):  # what the ranks printed, as this process's stdout
            log = out / f"rank{r}.log"
            lines = [ln for ln in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                     if ln.strip() and "hostname of the client socket cannot be retrieved" not in ln]
            for line in lines:
                print(f"[rank {r}] {line}")
        errors = sorted(out.glob("rank*.err"))
        if errors:
            raise RuntimeError(f"{errors[0].stem} failed:\n{errors[0].read_text()}")
        missing = [r for r in range(world_size) if not (out / f"rank{r}.pt").exists()]
        if missing:
            raise TimeoutError(f"ranks {missing} did not finish within {timeout} s (a collective that only some "
                               "ranks call waits forever: every rank must call the same collectives in the same order)")
        got = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    results = []
    for i in range(len(clean)):
        per_rank = [got[r][i] for r in range(world_size)]
        params0 = per_rank[0]["params"]
        spread = max(((a - b).abs().max().item() for other in per_rank[1:] for a, b in zip(other["params"], params0)),
                     default=0.0)
        results.append({"params": params0, "rank_spread": spread, "owners": per_rank[0]["owners"],
                        "state_bytes": [r["state_bytes"] for r in per_rank],
                        "owned_numel": [r["owned_numel"] for r in per_rank]})
    return results
