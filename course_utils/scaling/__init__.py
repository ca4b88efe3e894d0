"""Scaling laws (chapter 01): Kaplan and Chinchilla laws, compute-optimal sizing, fitting, a mini sweep."""

from course_utils.scaling.fit import (
    EXPONENT_BOUNDS,
    PAPER_GRID,
    ScalingLawFit,
    fit_power_law,
    fit_scaling_law,
    huber_objective,
)
from course_utils.scaling.laws import (
    CHINCHILLA,
    CHINCHILLA_TOKENS_PER_PARAM,
    COMPUTE_OPTIMAL_METHODS,
    KAPLAN_ALPHA_D,
    KAPLAN_ALPHA_N,
    KAPLAN_D_C,
    KAPLAN_N_C,
    ParametricLaw,
    chinchilla_loss,
    compute_optimal,
    kaplan_loss_d,
    kaplan_loss_n,
    scale_factor_for_loss_ratio,
    training_flops,
)
from course_utils.scaling.sweep import (
    DEFAULT_SHAPES,
    IsoFlopMinimum,
    SweepRun,
    frontier_exponent,
    isoflop_minima,
    plan_sweep,
    plot_isoflop,
    run_sweep,
    sweep_config,
    train_run,
)

__all__ = [
    "DEFAULT_SHAPES", "EXPONENT_BOUNDS", "IsoFlopMinimum", "SweepRun", "frontier_exponent", "isoflop_minima",
    "plan_sweep", "plot_isoflop", "run_sweep", "sweep_config", "train_run",
    "CHINCHILLA", "CHINCHILLA_TOKENS_PER_PARAM", "COMPUTE_OPTIMAL_METHODS", "KAPLAN_ALPHA_D", "KAPLAN_ALPHA_N",
    "KAPLAN_D_C", "KAPLAN_N_C", "PAPER_GRID", "ParametricLaw", "ScalingLawFit", "chinchilla_loss",
    "compute_optimal", "fit_power_law", "fit_scaling_law", "huber_objective", "kaplan_loss_d", "kaplan_loss_n",
    "scale_factor_for_loss_ratio", "training_flops",
]
