"""A mini iso-FLOP scaling sweep that runs on a laptop CPU.

For each compute budget ``C`` and each model shape, train a :class:`course_utils.arch.TinyLlama`
with ``N`` non-embedding parameters on ``D = C / (6·N)`` tokens of the Python-documentation
corpus (:mod:`course_utils.text_corpus`) and record the final validation loss. Then:

* **approach 2** of Hoffmann et al.: along each iso-FLOP curve fit a parabola of loss in
  ``log N`` through the best run and its neighbours; its vertex is that budget's ``N_opt``; a power law ``N_opt = k·C**a`` through the
  vertices is the empirical frontier (:func:`isoflop_minima`);
* **approach 3**: fit ``L(N, D) = E + A/N**alpha + B/D**beta`` to the runs
  (:func:`course_utils.scaling.fit_scaling_law`) and take its closed-form frontier.

Learning rates follow a cosine schedule whose length matches each run (with a short warm-up),
as in Chinchilla: a schedule longer than the run would make small-``D`` runs look worse than
they are. Runs of a few dozen steps are limited by optimisation rather than by ``N`` or ``D``;
the notebook leaves them out of the approach-3 fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from course_utils import checks
from course_utils.runtime import torch_threads
from course_utils.scaling.fit import ScalingLawFit, fit_power_law
from course_utils.scaling.laws import FLOPS_PER_PARAM_TOKEN, _positive_array

#: Model shapes of the sweep, ``(hidden_size, num_hidden_layers)``: about 0.9k to 0.3M non-embedding parameters.
DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((8, 1), (16, 1), (24, 1), (32, 1), (32, 2), (48, 2), (64, 2), (96, 3))


@dataclass
class SweepRun:
    """One training run of the sweep."""

    budget: float  # the compute budget C this run belongs to (FLOPs)
    hidden_size: int
    num_layers: int
    n_params: int  # non-embedding parameters N
    n_params_total: int
    steps: int
    tokens: int  # D actually seen = steps · batch_size · seq_len
    flops: float  # 6·N·D actually spent (by the non-embedding count)
    lr: float
    train_loss: float  # mean of the last 10% of training steps
    val_loss: float  # nats per token on the validation split
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def sweep_config(hidden_size: int, num_layers: int, vocab_size: int = 256, head_dim: int = 8):
    """A LLaMA-shaped :class:`TinyLlamaConfig`: SwiGLU width ``≈ 8/3·d`` (multiple of 8), heads of
    ``min(head_dim, hidden_size)``, grouped-query attention with two query heads per KV head when
    there are ≥ 4 heads."""
    from course_utils.arch import TinyLlamaConfig

    checks.positive_int(hidden_size=hidden_size, num_layers=num_layers, head_dim=head_dim)
    head_dim = min(head_dim, hidden_size)
    checks.divisible("hidden_size", hidden_size, head_dim, divisor_name="head_dim")
    heads = hidden_size // head_dim
    kv_heads = heads // 2 if heads >= 4 else heads
    ffn = max(8, int(round(8 * hidden_size / 3 / 8)) * 8)
    return TinyLlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=ffn,
                           num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                           max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-6,
                           tie_word_embeddings=False)


def default_lr(hidden_size: int, base_lr: float = 3e-3, base_width: int = 128) -> float:
    """Peak learning rate ``base_lr · sqrt(base_width / d)``: narrower models take larger steps."""
    return base_lr * math.sqrt(base_width / hidden_size)


def cosine_lr(step: int, total: int, peak: float, warmup: int, final_fraction: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay from ``peak`` to ``final_fraction·peak``
    at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, *, batch_size: int, seq_len: int, max_batches: int | None,
             device: str = "cpu") -> float:
    """Mean next-token cross-entropy (nats/token) over deterministic blocks of ``ids``."""
    from course_utils.text_corpus import eval_batches

    model.eval()
    total, count = 0.0, 0
    for x, y in eval_batches(ids, batch_size, seq_len, max_batches=max_batches, device=device):
        logits = model(x)
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def train_run(hidden_size: int, num_layers: int, num_tokens: float, corpus, *, budget: float = float("nan"),
              batch_size: int = 8, seq_len: int = 64, lr: float | None = None, eval_batches_max: int | None = 32,
              device: str = "cpu", seed: int = 0) -> SweepRun:
    """Train one TinyLlama on ``num_tokens`` tokens of ``corpus`` (a :class:`TokenizedCorpus`) and
    evaluate it on the validation split. The step count is ``round(num_tokens / (batch·seq_len))``, at least 1."""
    from course_utils.arch import TinyLlama
    from course_utils.text_corpus import sample_batch

    torch.manual_seed(seed)
    model = TinyLlama(sweep_config(hidden_size, num_layers, corpus.vocab_size)).to(device)
    lr = default_lr(hidden_size) if lr is None else lr
    steps = max(1, int(round(num_tokens / (batch_size * seq_len))))
    warmup = max(1, steps // 10)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup)
        x, y = sample_batch(corpus.train, batch_size, seq_len, generator=gen, device=device)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    val = evaluate(model, corpus.val, batch_size=batch_size, seq_len=seq_len, max_batches=eval_batches_max,
                   device=device)
    n = model.num_parameters(exclude_embeddings=True)
    tokens = steps * batch_size * seq_len
    tail = losses[-max(1, steps // 10):]
    return SweepRun(budget=float(budget), hidden_size=hidden_size, num_layers=num_layers, n_params=n,
                    n_params_total=model.num_parameters(exclude_embeddings=False), steps=steps, tokens=tokens,
                    flops=FLOPS_PER_PARAM_TOKEN * n * tokens, lr=lr, train_loss=float(np.mean(tail)),
                    val_loss=val, seconds=time.perf_counter() - start)


def plan_sweep(budgets: Sequence[float], shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES, *,
               vocab_size: int = 256, batch_size: int = 8, seq_len: int = 64, min_steps: int = 30,
               max_steps: int | None = 5000) -> list[dict]:
    """The runs of a sweep: for every budget and shape, ``D = C / (6·N)`` tokens; runs with fewer
    than ``min_steps`` (or more than ``max_steps``) optimiser steps are left out."""
    from course_utils.arch import TinyLlama

    budgets_arr = _positive_array(budgets, "budgets").ravel()
    checks.non_empty("shapes (hidden_size, num_layers) pairs", shapes)
    plan = []
    for hidden, layers in shapes:
        with torch.device("meta"):
            n = TinyLlama(sweep_config(hidden, layers, vocab_size)).num_parameters(exclude_embeddings=True)
        for c in budgets_arr:
            tokens = c / (FLOPS_PER_PARAM_TOKEN * n)
            steps = int(round(tokens / (batch_size * seq_len)))
            if steps < min_steps or (max_steps is not None and steps > max_steps):
                continue
            plan.append({"budget": float(c), "hidden_size": hidden, "num_layers": layers, "n_params": n,
                         "tokens": tokens, "steps": steps})
    return sorted(plan, key=lambda r: (r["budget"], r["n_params"]))


def run_sweep(budgets: Sequence[float], shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES, corpus=None, *,
              batch_size: int = 8, seq_len: int = 64, min_steps: int = 30, max_steps: int | None = 5000,
              eval_batches_max: int | None = 32, base_lr: float = 6e-3, device: str = "cpu", seed: int = 0,
              num_threads: int | None = None, progress: bool = True) -> list[SweepRun]:
    """Train every run of :func:`plan_sweep` (a tqdm bar counts optimiser steps) → list of :class:`SweepRun`.

    ``corpus`` defaults to the byte-level Python-documentation corpus (:func:`course_utils.text_corpus.load_corpus`).
    ``num_threads`` sets torch's CPU threads for the sweep (restored afterwards): models this small
    run fastest on one thread when other processes share the cores. Each run's peak learning rate is
    :func:`default_lr` ``(hidden_size, base_lr)``.
    """
    from tqdm.auto import tqdm

    from course_utils.text_corpus import load_corpus

    corpus = load_corpus("bytes") if corpus is None else corpus
    plan = plan_sweep(budgets, shapes, vocab_size=corpus.vocab_size, batch_size=batch_size, seq_len=seq_len,
                      min_steps=min_steps, max_steps=max_steps)
    if not plan:
        raise ValueError("no run of the sweep has between min_steps and max_steps steps; "
                         "raise the budgets or lower min_steps")
    runs = []
    with torch_threads(num_threads), tqdm(total=sum(r["steps"] for r in plan), desc="sweep (optimiser steps)",
                                          unit="step", disable=not progress) as bar:
        for r in plan:
            bar.set_postfix_str(f"C={r['budget']:.1e} N={r['n_params']:,}")
            runs.append(train_run(r["hidden_size"], r["num_layers"], r["tokens"], corpus, budget=r["budget"],
                                  batch_size=batch_size, seq_len=seq_len, eval_batches_max=eval_batches_max,
                                  lr=default_lr(r["hidden_size"], base_lr), device=device, seed=seed))
            bar.update(r["steps"])
    return runs


@dataclass
class IsoFlopMinimum:
    """The optimum of one iso-FLOP curve (approach 2)."""

    budget: float
    n_opt: float
    d_opt: float
    loss: float
    from_parabola: bool  # False: the parabola was not convex or its vertex fell outside the runs; the best run is used


def isoflop_minima(runs: Sequence[SweepRun]) -> list[IsoFlopMinimum]:
    """For every budget with at least 3 runs, the minimum of its iso-FLOP curve.

    The parabola ``loss = p2·(log N)² + p1·log N + p0`` through the best run and its two neighbours
    in ``N`` gives the vertex (a local fit: far from the optimum the curve is not a parabola, e.g. big
    models with a handful of steps). When the best run is the smallest or the largest trained, the
    minimum lies outside the sweep and the best run stands in (``from_parabola=False``).
    ``D_opt = C / (6·N_opt)``.
    """
    out = []
    for c in sorted({r.budget for r in runs}):
        group = sorted((r for r in runs if r.budget == c), key=lambda r: r.n_params)
        if len(group) < 3:
            continue
        loss = np.array([r.val_loss for r in group])
        i = int(np.argmin(loss))
        n_opt, best, parabola = float(group[i].n_params), float(loss[i]), False
        if 0 < i < len(group) - 1:
            log_n = np.log([r.n_params for r in group[i - 1 : i + 2]])
            p2, p1, p0 = np.polyfit(log_n, loss[i - 1 : i + 2], 2)
            if p2 > 0:
                x = -p1 / (2 * p2)
                n_opt, best, parabola = float(np.exp(x)), float(p2 * x * x + p1 * x + p0), True
        out.append(IsoFlopMinimum(budget=float(c), n_opt=n_opt, d_opt=float(c / (FLOPS_PER_PARAM_TOKEN * n_opt)),
                                  loss=best, from_parabola=parabola))
    return out


def frontier_exponent(minima: Sequence[IsoFlopMinimum]) -> tuple[float, float]:
    """``(k, a)`` of ``N_opt = k · C**a`` through the iso-FLOP minima (needs 2 budgets or more)."""
    if len(minima) < 2:
        raise ValueError(f"the frontier needs minima at 2 budgets or more, got {len(minima)}")
    return fit_power_law([m.budget for m in minima], [m.n_opt for m in minima])


def plot_isoflop(runs: Sequence[SweepRun], fit: ScalingLawFit | None = None, minima=None, ax=None):
    """Validation loss against N, one curve per budget; the fitted law's iso-FLOP curves (dashed) and
    its optimum (stars), and the parabola vertices (diamonds)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    budgets = sorted({r.budget for r in runs})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))
    for c, color in zip(budgets, colors):
        group = sorted((r for r in runs if r.budget == c), key=lambda r: r.n_params)
        ax.plot([r.n_params for r in group], [r.val_loss for r in group], "o-", color=color, label=f"C = {c:.1e}")
        if fit is not None:
            n_grid = np.geomspace(group[0].n_params / 1.5, group[-1].n_params * 1.5, 100)
            ax.plot(n_grid, fit.loss(n_grid, c / (FLOPS_PER_PARAM_TOKEN * n_grid)), "--", color=color, alpha=0.7)
            n_opt, d_opt = fit.compute_optimal(c)
            ax.plot([n_opt], [fit.loss(n_opt, d_opt)], "*", color=color, markersize=14, markeredgecolor="k")
    for m in minima or []:
        ax.plot([m.n_opt], [m.loss], "D", color="red", markersize=6)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("iso-FLOP curves: dashed = fitted L(N, D), ★ its optimum, ◆ parabola vertex")
    ax.legend(fontsize=8)
    return ax
