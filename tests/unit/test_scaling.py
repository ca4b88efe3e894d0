"""course_utils.scaling: the laws, compute-optimal sizing, the approach-3 fit, and a tiny sweep."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from course_utils.scaling import (
    CHINCHILLA,
    ParametricLaw,
    chinchilla_loss,
    compute_optimal,
    fit_power_law,
    fit_scaling_law,
    huber_objective,
    isoflop_minima,
    kaplan_loss_d,
    kaplan_loss_n,
    plan_sweep,
    run_sweep,
    scale_factor_for_loss_ratio,
    training_flops,
)
from course_utils.scaling.fit import _objective_and_grad
from course_utils.scaling.sweep import SweepRun, cosine_lr

# --- the laws ---------------------------------------------------------------------------------------


def test_kaplan_laws_match_their_definition():
    assert kaplan_loss_n(8.8e13) == pytest.approx(1.0)
    assert kaplan_loss_n(1e9) == pytest.approx((8.8e13 / 1e9) ** 0.076)
    assert kaplan_loss_d(5.4e13) == pytest.approx(1.0)
    assert kaplan_loss_d(1e10) == pytest.approx((5.4e13 / 1e10) ** 0.095)
    # 10x the parameters multiplies the loss by 10**-0.076, about 0.84: not a halving
    assert kaplan_loss_n(1e10) / kaplan_loss_n(1e9) == pytest.approx(10**-0.076)
    assert scale_factor_for_loss_ratio(0.5, 0.076) == pytest.approx(2 ** (1 / 0.076))
    assert scale_factor_for_loss_ratio(10**-0.076, 0.076) == pytest.approx(10.0)
    out = kaplan_loss_n([1e8, 1e9])
    assert isinstance(out, np.ndarray) and out.shape == (2,) and out[0] > out[1]


def test_chinchilla_loss_and_flops():
    n, d = 70e9, 1.4e12
    expected = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    assert chinchilla_loss(n, d) == pytest.approx(expected)
    assert CHINCHILLA.loss(n, d) == pytest.approx(expected)
    assert training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    assert isinstance(training_flops(1e9, 2e10), float)
    np.testing.assert_allclose(training_flops(np.array([1e9, 2e9]), 1e10), [6e19, 1.2e20])


def test_compute_optimal_rule_reproduces_the_syllabus_table():
    for params, tokens in [(1e9, 20e9), (7e9, 140e9), (70e9, 1.4e12)]:
        n_opt, d_opt = compute_optimal(6 * params * tokens, method="rule")
        assert n_opt == pytest.approx(params, rel=1e-12)
        assert d_opt == pytest.approx(tokens, rel=1e-12)
        assert d_opt / n_opt == pytest.approx(20.0)
    n_arr, d_arr = compute_optimal(np.array([1.2e20, 5.88e23]))
    np.testing.assert_allclose(n_arr, [1e9, 70e9])
    np.testing.assert_allclose(6 * n_arr * d_arr, [1.2e20, 5.88e23])


@pytest.mark.parametrize("compute", [1e18, 5.76e23, 1e26])
def test_parametric_optimum_matches_a_numeric_minimiser(compute):
    n_opt, d_opt = compute_optimal(compute, method="parametric")
    assert 6 * n_opt * d_opt == pytest.approx(compute)
    # minimise L(N, C/6N) over log N numerically
    res = minimize_scalar(lambda log_n: CHINCHILLA.loss(math.exp(log_n), compute / (6 * math.exp(log_n))),
                          bounds=(math.log(1e3), math.log(compute / 6 / 1e3)), method="bounded",
                          options={"xatol": 1e-10})
    assert math.exp(res.x) == pytest.approx(n_opt, rel=1e-3)
    assert CHINCHILLA.loss(n_opt, d_opt) <= CHINCHILLA.loss(n_opt * 1.1, d_opt / 1.1)
    assert CHINCHILLA.loss(n_opt, d_opt) <= CHINCHILLA.loss(n_opt / 1.1, d_opt * 1.1)


def test_parametric_optimum_scaling_exponents():
    n1, d1 = compute_optimal(1e21, method="parametric")
    n2, d2 = compute_optimal(1e23, method="parametric")
    assert math.log(n2 / n1, 100) == pytest.approx(0.28 / 0.62)
    assert math.log(d2 / d1, 100) == pytest.approx(0.34 / 0.62)
    g = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    assert CHINCHILLA.G == pytest.approx(g)
    assert n1 == pytest.approx(g * (1e21 / 6) ** (0.28 / 0.62))
    # a custom law: equal exponents and constants give N_opt = D_opt = sqrt(C/6)
    sym = ParametricLaw(E=1.0, A=100.0, B=100.0, alpha=0.3, beta=0.3)
    n, d = compute_optimal(6e20, method="parametric", law=sym)
    assert n == pytest.approx(1e10) and d == pytest.approx(1e10)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="compute_flops"):
        compute_optimal(0)
    with pytest.raises(ValueError, match="compute_flops"):
        compute_optimal(-1e20, method="parametric")
    with pytest.raises(ValueError, match="compute_flops"):
        compute_optimal(float("nan"))
    with pytest.raises(ValueError, match="method"):
        compute_optimal(1e20, method="kaplan")
    with pytest.raises(TypeError, match="compute_flops"):
        compute_optimal("1e20")
    with pytest.raises(ValueError, match="tokens_per_param"):
        compute_optimal(1e20, tokens_per_param=0)
    with pytest.raises(TypeError, match="law"):
        compute_optimal(1e20, method="parametric", law={"E": 1})
    with pytest.raises(ValueError, match="num_params"):
        kaplan_loss_n(-5)
    with pytest.raises(ValueError, match="alpha"):
        ParametricLaw(E=1.0, A=1.0, B=1.0, alpha=-0.1, beta=0.3)
    with pytest.raises(ValueError, match="same length"):
        fit_scaling_law([1e6] * 6, [1e7] * 5, [3.0] * 6)
    with pytest.raises(ValueError, match="at least 5"):
        fit_scaling_law([1e6] * 4, [1e7] * 4, [3.0] * 4)
    with pytest.raises(ValueError, match="loss"):
        fit_scaling_law([1e6] * 6, [1e7] * 6, [3.0, 2.0, 1.0, 0.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="budgets"):
        plan_sweep([0.0])


# --- the fit -----------------------------------------------------------------------------------------


def test_analytic_gradient_matches_scipy_reference_objective():
    rng = np.random.default_rng(1)
    log_n, log_d = rng.uniform(15, 23, 12), rng.uniform(20, 27, 12)
    log_loss = np.log(CHINCHILLA.loss(np.exp(log_n), np.exp(log_d))) + rng.normal(0, 0.01, 12)
    x = np.array([6.0, 6.0, 0.5, 0.3, 0.3])
    value, grad = _objective_and_grad(x, log_n, log_d, log_loss, 1e-3)
    assert value == pytest.approx(huber_objective(x, log_n, log_d, log_loss, 1e-3), rel=1e-10)
    eps = 1e-6
    numeric = [(huber_objective(x + eps * e, log_n, log_d, log_loss) - huber_objective(x - eps * e, log_n, log_d,
                                                                                          log_loss)) / (2 * eps)
               for e in np.eye(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_fit_recovers_known_constants_from_noisy_runs():
    rng = np.random.default_rng(0)
    n = 10 ** rng.uniform(7, 10, 40)
    d = 10 ** rng.uniform(9, 12, 40)
    loss = CHINCHILLA.loss(n, d) * np.exp(rng.normal(0, 0.005, 40))  # 0.5% multiplicative noise
    fit = fit_scaling_law(n, d, loss, n_starts=3)  # L-BFGS from the 3 best points of the paper's grid
    assert fit.alpha == pytest.approx(0.34, abs=0.04)
    assert fit.beta == pytest.approx(0.28, abs=0.04)
    assert fit.E == pytest.approx(1.69, abs=0.1)
    assert not fit.exponent_at_bound
    # the fitted law predicts held-out points and the compute-optimal size
    n_test, d_test = np.array([3e9, 2e8]), np.array([5e10, 4e11])
    np.testing.assert_allclose(fit.loss(n_test, d_test), CHINCHILLA.loss(n_test, d_test), rtol=0.02)
    assert fit.compute_optimal(1e22)[0] == pytest.approx(compute_optimal(1e22, "parametric")[0], rel=0.5)


def test_fit_power_law():
    k, p = fit_power_law([1e10, 1e11, 1e12], [2 * 1e10**0.5, 2 * 1e11**0.5, 2 * 1e12**0.5])
    assert k == pytest.approx(2.0) and p == pytest.approx(0.5)


# --- the sweep ---------------------------------------------------------------------------------------


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert cosine_lr(99, 100, 1.0, 10) == pytest.approx(0.1)


def test_plan_sweep_spends_the_budget():
    plan = plan_sweep([1e10, 1e11], min_steps=20, max_steps=2000)
    assert plan and all(20 <= r["steps"] <= 2000 for r in plan)
    for r in plan:
        assert 6 * r["n_params"] * r["tokens"] == pytest.approx(r["budget"])
    assert {r["budget"] for r in plan} == {1e10, 1e11}


def test_isoflop_minima_finds_the_parabola_vertex():
    runs = [SweepRun(budget=1e10, hidden_size=0, num_layers=0, n_params=int(n), n_params_total=0, steps=1,
                     tokens=1, flops=0.0, lr=0.0, train_loss=0.0, val_loss=(math.log(n) - math.log(2e4)) ** 2 + 1,
                     seconds=0.0) for n in (3e3, 1e4, 3e4, 1e5)]
    (m,) = isoflop_minima(runs)
    assert m.from_parabola and m.n_opt == pytest.approx(2e4, rel=1e-6) and m.loss == pytest.approx(1.0)
    assert m.d_opt == pytest.approx(1e10 / (6 * 2e4))
    # a curve still falling at the smallest size has no interior minimum: the best run stands in
    for r in runs:
        r.val_loss = math.log(r.n_params)
    (edge,) = isoflop_minima(runs)
    assert not edge.from_parabola and edge.n_opt == 3000


def test_tiny_sweep_trains_and_loss_falls_with_compute():
    from course_utils.text_corpus import load_corpus

    corpus = load_corpus("bytes")
    runs = run_sweep([2e7, 2e8], [(16, 1)], corpus, batch_size=4, seq_len=16, min_steps=1, max_steps=200,
                     eval_batches_max=4, num_threads=1, progress=False)
    assert len(runs) == 2
    small, big = runs
    assert big.tokens > small.tokens and big.n_params == small.n_params
    assert big.flops == pytest.approx(6 * big.n_params * big.tokens)
    assert big.val_loss < small.val_loss < math.log(256) + 0.5  # training on more tokens helps
