"""The scaling-law fit (cogfm_hf.experiments.scaling_law) on losses generated from a known law."""

import dataclasses

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from cogfm_hf.experiments.scaling_law import (
    Law,
    bootstrap,
    fit_accuracy,
    fit_law,
    predicted_accuracy,
)
from cogfm_hf.experiments.stats import percentile_interval

TRUE = Law(E=1.2, A=60.0, alpha=0.35, B=300.0, beta=0.3)  # the ladder's range: L ~ 2-3 nats
SIZES = [2e5, 4e5, 8e5, 1.6e6, 3.2e6]
BUDGETS = [2e6, 4e6, 8e6, 1.6e7]  # the cooldowns branched from each run


def ladder(noise: float, seed: int) -> list[list[tuple[float, float, float]]]:
    """One run per size (two at the two smallest, as the ladder's noise floor), each with a point per budget."""
    rng = np.random.default_rng(seed)
    runs = []
    for size in SIZES[:2] + SIZES:
        runs.append([(size, d, float(TRUE.loss(size, d) * np.exp(rng.normal(0, noise)))) for d in BUDGETS])
    return runs


def test_fit_recovers_the_law_exactly_from_noiseless_losses():
    points = np.array([p for run in ladder(0.0, 0) for p in run])
    law = fit_law(points[:, 0], points[:, 1], points[:, 2])
    for name, true in dataclasses.asdict(TRUE).items():
        assert getattr(law, name) == pytest.approx(true, rel=1e-5), name


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_noisy_fit_forecasts_a_held_out_size_and_its_interval_holds_the_truth(seed):
    runs = ladder(0.005, seed)  # 0.5% noise per run, above what our repeated seeds show
    points = np.array([p for run in runs for p in run])
    law = fit_law(points[:, 0], points[:, 1], points[:, 2])
    held_out = (6.4e6, 1.6e7)  # twice the largest size
    assert law.loss(*held_out) == pytest.approx(TRUE.loss(*held_out), rel=0.02)
    laws = bootstrap(runs, samples=40, seed=seed)
    low, high = percentile_interval([candidate.loss(*held_out) for candidate in laws])
    assert low <= TRUE.loss(*held_out) <= high
    assert high - low < 0.1 * TRUE.loss(*held_out)  # an interval, not the whole axis


def test_fit_rejects_too_few_points_and_nonpositive_values():
    with pytest.raises(ValueError, match="at least 5"):
        fit_law([1e5] * 4, [1e6] * 4, [2.0] * 4)
    with pytest.raises(ValueError, match="positive"):
        fit_law([1e5] * 5, [1e6] * 5, [2.0, 2.0, 0.0, 2.0, 2.0])


def test_compute_optimal_split_minimises_the_law_at_fixed_compute():
    for flops in (1e15, 1e18, 1e21):
        n, d = TRUE.compute_optimal(flops)
        numeric = minimize_scalar(
            lambda log_n: TRUE.loss(np.exp(log_n), flops / (6 * np.exp(log_n))), bounds=(5, 40), method="bounded"
        )
        assert np.log(n) == pytest.approx(numeric.x, abs=1e-3)
        assert 6 * n * d == pytest.approx(flops)
        assert TRUE.tokens_per_parameter(flops) == pytest.approx(d / n)


def test_accuracy_sigmoid_recovers_its_parameters():
    task_loss = np.linspace(0.5, 3.0, 25)
    accuracy = predicted_accuracy(task_loss, k=4.0, midpoint=1.6, floor=0.2)
    k, midpoint, floor = fit_accuracy(task_loss, accuracy)
    assert (k, midpoint, floor) == (
        pytest.approx(4.0, rel=1e-3),
        pytest.approx(1.6, rel=1e-3),
        pytest.approx(0.2, abs=1e-3),
    )
