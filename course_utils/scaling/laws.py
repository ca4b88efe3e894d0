"""Scaling laws: Kaplan et al. (2020), Chinchilla (Hoffmann et al., 2022), training compute.

Kaplan et al., "Scaling Laws for Neural Language Models" (2020), fit the test loss (nats per
token) of a model with ``N`` non-embedding parameters, trained to convergence, and of a large
model trained on ``D`` tokens, as separate power laws::

    L(N) = (N_c / N) ** alpha_N      alpha_N ≈ 0.076, N_c ≈ 8.8e13 non-embedding parameters
    L(D) = (D_c / D) ** alpha_D      alpha_D ≈ 0.095, D_c ≈ 5.4e13 tokens

Hoffmann et al., "Training Compute-Optimal Large Language Models" (2022), fit one parametric
loss in both (their approach 3)::

    L(N, D) = E + A / N**alpha + B / D**beta
    E = 1.69, A = 406.4, B = 410.7, alpha = 0.34, beta = 0.28

``E`` is the irreducible loss (the entropy of text), ``A / N**alpha`` what a finite model
cannot represent, ``B / D**beta`` what finite data cannot teach. Training a dense transformer
costs about ``C ≈ 6·N·D`` FLOPs (2 for the forward multiply-add per parameter per token,
4 for the backward pass).

Minimising ``L(N, D)`` subject to ``6·N·D = C`` (set dL/dN = 0 with ``D = C / (6N)``):
``alpha·A·N**-alpha = beta·B·D**-beta``, hence::

    G     = (alpha·A / (beta·B)) ** (1 / (alpha + beta))
    N_opt = G · (C/6) ** (beta / (alpha + beta))
    D_opt = (1/G) · (C/6) ** (alpha / (alpha + beta))

The simpler rule of thumb from the same paper is ~20 training tokens per parameter:
``D = 20·N``, so ``C = 6·N·20·N`` and ``N_opt = sqrt(C / 120)``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from course_utils import checks

#: Kaplan et al. (2020), eqs. (1.1) and (1.2): exponents and scales (N non-embedding parameters, D tokens).
KAPLAN_ALPHA_N = 0.076
KAPLAN_N_C = 8.8e13
KAPLAN_ALPHA_D = 0.095
KAPLAN_D_C = 5.4e13

#: The Chinchilla rule of thumb: training tokens per parameter at the compute optimum.
CHINCHILLA_TOKENS_PER_PARAM = 20.0

#: FLOPs per parameter per training token (forward 2, backward 4).
FLOPS_PER_PARAM_TOKEN = 6.0

COMPUTE_OPTIMAL_METHODS = ("rule", "parametric")


def _positive_array(value, name: str) -> np.ndarray:
    """``value`` as a float array, checking it is real, finite and > 0 (naming ``name`` if not)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a positive number or an array of positive numbers, got {value!r}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a positive number or an array of positive numbers, got {value!r}") from err
    if arr.size == 0:
        raise ValueError(f"{name} is empty; expected at least one positive number")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return arr


def _like_input(result: np.ndarray, original):
    """A Python float when the input was a scalar, else the array."""
    if isinstance(original, numbers.Real) or np.ndim(original) == 0:
        return float(result)
    return result


def kaplan_loss_n(num_params, *, alpha_n: float = KAPLAN_ALPHA_N, n_c: float = KAPLAN_N_C):
    """Kaplan's ``L(N) = (N_c / N) ** alpha_N`` (nats/token, N non-embedding parameters, data unlimited)."""
    n = _positive_array(num_params, "num_params")
    return _like_input((n_c / n) ** alpha_n, num_params)


def kaplan_loss_d(num_tokens, *, alpha_d: float = KAPLAN_ALPHA_D, d_c: float = KAPLAN_D_C):
    """Kaplan's ``L(D) = (D_c / D) ** alpha_D`` (nats/token, large model, early-stopped on D tokens)."""
    d = _positive_array(num_tokens, "num_tokens")
    return _like_input((d_c / d) ** alpha_d, num_tokens)


def scale_factor_for_loss_ratio(ratio: float, exponent: float) -> float:
    """How many times larger N (or D) must be to multiply a pure power-law loss by ``ratio``.

    ``L ∝ X**-exponent`` so ``L2/L1 = (X2/X1)**-exponent`` and ``X2/X1 = ratio**(-1/exponent)``.
    With Kaplan's ``alpha_N = 0.076``, halving the loss (ratio 0.5) takes ``2**(1/0.076) ≈ 9,000×``
    more parameters, and 10× more parameters multiplies the loss by ``10**-0.076 ≈ 0.84``.
    """
    checks.positive_number(ratio=ratio, exponent=exponent)
    return ratio ** (-1.0 / exponent)


def training_flops(num_params, num_tokens):
    """Training compute ``C ≈ 6·N·D`` FLOPs for ``N`` parameters trained on ``D`` tokens."""
    n = _positive_array(num_params, "num_params")
    d = _positive_array(num_tokens, "num_tokens")
    try:
        c = FLOPS_PER_PARAM_TOKEN * n * d
    except ValueError as err:
        raise ValueError(f"num_params and num_tokens must broadcast, got shapes {n.shape} and {d.shape}") from err
    return _like_input(c, num_params if np.ndim(num_params) >= np.ndim(num_tokens) else num_tokens)


@dataclass(frozen=True)
class ParametricLaw:
    """Chinchilla's parametric loss ``L(N, D) = E + A / N**alpha + B / D**beta``."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self):
        checks.real("E", self.E)
        for field_name in ("A", "B", "alpha", "beta"):
            checks.real(field_name, getattr(self, field_name), low=0, low_open=True)

    def loss(self, num_params, num_tokens):
        """``E + A / N**alpha + B / D**beta`` (broadcasts over arrays)."""
        n = _positive_array(num_params, "num_params")
        d = _positive_array(num_tokens, "num_tokens")
        out = self.E + self.A / n**self.alpha + self.B / d**self.beta
        return _like_input(out, num_params if np.ndim(num_params) >= np.ndim(num_tokens) else num_tokens)

    @property
    def G(self) -> float:
        """``G = (alpha·A / (beta·B)) ** (1 / (alpha + beta))``, the constant of the optimal allocation."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    @property
    def a(self) -> float:
        """Exponent of the optimal model size, ``N_opt ∝ C**a`` with ``a = beta / (alpha + beta)``."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of the optimal token count, ``D_opt ∝ C**b`` with ``b = alpha / (alpha + beta)``."""
        return self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, compute_flops):
        """``(N_opt, D_opt)`` minimising ``L`` under ``6·N·D = C`` (closed form, see the module doc)."""
        c = _positive_array(compute_flops, "compute_flops")
        k = c / FLOPS_PER_PARAM_TOKEN
        n_opt = self.G * k**self.a
        d_opt = k / n_opt
        return _like_input(n_opt, compute_flops), _like_input(d_opt, compute_flops)


#: Hoffmann et al. (2022), approach 3 (their eq. 10 fit).
CHINCHILLA = ParametricLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def chinchilla_loss(num_params, num_tokens, law: ParametricLaw = CHINCHILLA):
    """Chinchilla's ``L(N, D) = E + A / N**alpha + B / D**beta`` with the paper's constants by default."""
    return law.loss(num_params, num_tokens)


def compute_optimal(compute_flops, method: str = "rule", *,
                    tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM,
                    law: ParametricLaw = CHINCHILLA):
    """Compute-optimal ``(N_opt, D_opt)`` for a training budget of ``compute_flops`` FLOPs.

    Args:
        compute_flops: C, a positive number or array of them.
        method: ``"rule"``: ``D = tokens_per_param · N`` with ``C = 6·N·D``, so
            ``N_opt = sqrt(C / (6 · tokens_per_param))``; ``"parametric"``: minimise
            ``law.loss(N, D)`` under ``C = 6·N·D`` (closed form, :meth:`ParametricLaw.compute_optimal`).
        tokens_per_param: the rule's ratio (20 in Chinchilla).
        law: the parametric law (Chinchilla's by default, or one from :func:`fit_scaling_law`).

    Returns:
        ``(N_opt, D_opt)``: floats for a scalar budget, arrays for an array of budgets.
    """
    checks.one_of("method", method, COMPUTE_OPTIMAL_METHODS)
    if method == "parametric":
        checks.instance("law", law, ParametricLaw)
        return law.compute_optimal(compute_flops)
    c = _positive_array(compute_flops, "compute_flops")
    checks.positive_number(tokens_per_param=tokens_per_param)
    n_opt = np.sqrt(c / (FLOPS_PER_PARAM_TOKEN * tokens_per_param))
    d_opt = tokens_per_param * n_opt
    return _like_input(n_opt, compute_flops), _like_input(d_opt, compute_flops)
