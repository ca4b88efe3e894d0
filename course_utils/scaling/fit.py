"""Fitting Chinchilla's parametric loss to training runs (Hoffmann et al. 2022, approach 3).

With ``a = log A``, ``b = log B``, ``e = log E`` the model's log-loss is a log-sum-exp::

    log L̂(N, D) = LSE(a - alpha·log N,  b - beta·log D,  e)

and the fit minimises the Huber loss of the residuals in log space::

    min over (a, b, e, alpha, beta) of   sum_i Huber_delta( log L̂(N_i, D_i) - log L_i ),   delta = 1e-3

with L-BFGS. The objective is not convex, so the paper starts L-BFGS from every point of a grid
(alpha, beta ∈ {0, 0.5, …, 2}, e ∈ {-1, -0.5, …, 1}, a, b ∈ {0, 5, …, 25}) and keeps the
best optimum. Here the objective is first evaluated at every grid point (vectorised, cheap) and
L-BFGS starts from the ``n_starts`` best of them, which finds the same optimum in a fraction of
the time; ``n_starts=None`` starts from every grid point, as the paper (minutes, not seconds).
The exponents are bounded to :data:`EXPONENT_BOUNDS` (L-BFGS-B), so a sweep too small to show
a trend returns a fit flagged ``exponent_at_bound`` rather than a negative exponent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from course_utils import checks
from course_utils.scaling.laws import ParametricLaw, _positive_array

#: Hoffmann et al.'s initialisation grid, one axis per parameter (a, b, e, alpha, beta).
PAPER_GRID = {
    "a": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "b": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "e": np.arange(-1.0, 1.0 + 1e-9, 0.5),
    "alpha": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "beta": np.arange(0.0, 2.0 + 1e-9, 0.5),
}
_ORDER = ("a", "b", "e", "alpha", "beta")
#: L-BFGS-B bounds: exponents stay positive (a loss that grows with N or D is not this law's shape).
EXPONENT_BOUNDS = (1e-3, 5.0)
_BOUNDS = [(-20.0, 60.0), (-20.0, 60.0), (-20.0, 10.0), EXPONENT_BOUNDS, EXPONENT_BOUNDS]


@dataclass(frozen=True)
class ScalingLawFit:
    """The result of :func:`fit_scaling_law`: the fitted law and how well it fits."""

    law: ParametricLaw
    objective: float  # the minimised sum of Huber losses
    n_points: int
    n_starts: int
    exponent_at_bound: bool = False  # alpha or beta ended on a bound of EXPONENT_BOUNDS: the runs do not pin it

    def __getattr__(self, name):  # fit.E, fit.alpha, … read through to the law
        if name in ("E", "A", "B", "alpha", "beta", "G", "a", "b", "loss", "compute_optimal"):
            return getattr(self.law, name)
        raise AttributeError(name)


def huber_objective(params: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                    delta: float = 1e-3) -> float:
    """Sum of ``Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L)`` over the runs.

    Written with ``scipy.special.logsumexp`` and ``scipy.special.huber`` as the reference that
    :func:`_objective_and_grad` (used by the optimiser) is tested against.
    """
    a, b, e, alpha, beta = params
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    residual = logsumexp(terms, axis=0) - log_loss
    return float(np.sum(huber(delta, residual)))


def _objective_and_grad(params, log_n, log_d, log_loss, delta):
    """The Huber objective and its analytic gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = params
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    shifted = np.exp(terms - terms.max(axis=0))
    total = shifted.sum(axis=0)
    lse = terms.max(axis=0) + np.log(total)
    weights = shifted / total  # softmax over the three terms: d LSE / d term
    r = lse - log_loss
    small = np.abs(r) <= delta
    value = np.sum(np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)))
    dr = np.where(small, r, delta * np.sign(r))  # Huber'(r)
    grad = np.array([
        np.sum(dr * weights[0]),
        np.sum(dr * weights[1]),
        np.sum(dr * weights[2]),
        np.sum(dr * weights[0] * -log_n),
        np.sum(dr * weights[1] * -log_d),
    ])
    return float(value), grad


def _grid_points(grid: dict[str, np.ndarray]) -> np.ndarray:
    return np.array(list(itertools.product(*(np.asarray(grid[k], dtype=float) for k in _ORDER))))


def _grid_objectives(points: np.ndarray, log_n, log_d, log_loss, delta) -> np.ndarray:
    """The objective at every grid point at once: (P, 5) → (P,)."""
    a, b, e, alpha, beta = (points[:, i : i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(points), len(log_n)))])
    residual = logsumexp(terms, axis=0) - log_loss
    return np.sum(huber(delta, residual), axis=1)


def fit_scaling_law(num_params, num_tokens, loss, *, delta: float = 1e-3, n_starts: int | None = 10,
                    grid: dict[str, np.ndarray] | None = None, max_iter: int = 200) -> ScalingLawFit:
    """Fit ``L(N, D) = E + A/N**alpha + B/D**beta`` to runs by Chinchilla's approach 3.

    Args:
        num_params, num_tokens, loss: one entry per training run (N, D and its final loss),
            positive, same length, at least 5 runs (five parameters are fitted).
        delta: the Huber threshold on log-loss residuals (1e-3 in the paper).
        n_starts: how many of the best grid points L-BFGS starts from; None: every grid point.
        grid: initialisation grid ``{"a", "b", "e", "alpha", "beta"} → values``; the paper's by default.
        max_iter: L-BFGS iterations per start.

    Returns:
        A :class:`ScalingLawFit`; ``fit.law`` is the :class:`ParametricLaw` (``fit.alpha`` etc. also work).
    """
    n = _positive_array(num_params, "num_params").ravel()
    d = _positive_array(num_tokens, "num_tokens").ravel()
    losses = _positive_array(loss, "loss").ravel()
    checks.same_length(num_params=n, num_tokens=d, loss=losses)
    if len(n) < 5:
        raise ValueError(f"fitting 5 parameters needs at least 5 runs, got {len(n)}")
    checks.positive_number(delta=delta)
    if n_starts is not None:
        checks.positive_int(n_starts=n_starts)
    grid = PAPER_GRID if grid is None else grid
    missing = set(_ORDER) - set(grid)
    if missing:
        raise ValueError(f"grid is missing the axes {sorted(missing)}; expected keys {list(_ORDER)}")

    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(losses)
    points = _grid_points(grid)
    if n_starts is not None and n_starts < len(points):
        scores = _grid_objectives(points, log_n, log_d, log_loss, delta)
        points = points[np.argsort(scores, kind="stable")[:n_starts]]

    best = None
    lower, upper = np.array([b[0] for b in _BOUNDS]), np.array([b[1] for b in _BOUNDS])
    for start in points:
        res = minimize(_objective_and_grad, np.clip(start, lower, upper), args=(log_n, log_d, log_loss, delta),
                       jac=True, method="L-BFGS-B", bounds=_BOUNDS,
                       options={"maxiter": max_iter, "gtol": 1e-8, "ftol": 1e-10})
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    at_bound = any(np.isclose(x, bound, rtol=1e-6, atol=1e-9) for x in (alpha, beta) for bound in EXPONENT_BOUNDS)
    law = ParametricLaw(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=float(alpha),
                        beta=float(beta))
    return ScalingLawFit(law=law, objective=float(best.fun), n_points=len(n), n_starts=len(points),
                         exponent_at_bound=bool(at_bound))


def fit_power_law(x, y) -> tuple[float, float]:
    """Least-squares fit of ``y = k · x**p`` in log-log space → ``(k, p)``.

    Used for the frontier of an iso-FLOP sweep (``N_opt = k · C**p``, approach 2 of Hoffmann et al.).
    """
    xs = _positive_array(x, "x").ravel()
    ys = _positive_array(y, "y").ravel()
    checks.same_length(x=xs, y=ys)
    if len(xs) < 2:
        raise ValueError(f"a power-law fit needs at least 2 points, got {len(xs)}")
    p, log_k = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(np.exp(log_k)), float(p)
