"""The scaling law a ladder of runs is fitted to, and what it predicts.

L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, approach 3): N parameters, D training tokens. The fit
minimises the Huber loss (delta 1e-3) between log L and the log of the law, written as a log-sum-exp of
(e, a - alpha log N, b - beta log D) so that E = exp(e), A = exp(a), B = exp(b) stay positive. It runs L-BFGS (with
wide bounds, so a fit on few noisy points cannot run off to an overflow) from the best points of a grid search, and
the best end wins: the objective has several local minima, and a single start is one of the pitfalls the Epoch AI
refit (Besiroglu et al. 2024, arXiv 2404.10102) found in the original. Intervals come from refitting on runs
resampled with replacement (`bootstrap`): a run's points (its cooldowns at several D) move together, so resampling
points would understate the spread. The FLOPs of a run come from `cogfm_hf.presets.train_flops_per_token`
(attention and the output layer counted, as Porian et al. 2024, arXiv 2406.19146, show a small model's law needs).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, nnls
from threadpoolctl import threadpool_limits

HUBER_DELTA = 1e-3  # Hoffmann et al.'s choice: residuals in log-loss beyond it count linearly (outlier runs)
# The global search: every (alpha, beta) on this grid, with E, A and B then linear (non-negative least squares on the
# losses, weighted to approximate log-loss residuals); the best POLISHED of those start BFGS on the full objective.
EXPONENT_GRID = np.arange(0.05, 1.51, 0.05)
POLISHED = 8
# The Huber objective is ~1e-7 near the minimum: scipy's default relative tolerance would stop far from it.
LBFGS_OPTIONS = dict(ftol=1e-15, gtol=1e-10, maxiter=2000)
# Bounds on (e, a, b) (logs of the coefficients at the centred logs of N and D) and on the exponents: far outside any
# law a ladder can show, they only stop a fit on a few noisy points from running off to an overflow.
LOG_COEFFICIENT_BOUND = 30.0
EXPONENT_BOUNDS = (0.0, 3.0)


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def loss(self, n, d):
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    def compute_optimal(self, flops):
        """N and D that minimise the loss at `flops` = 6 N D (the closed form of Hoffmann et al., eq. 4)."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        n = g * (np.asarray(flops, float) / 6) ** (self.beta / (self.alpha + self.beta))
        return n, np.asarray(flops, float) / (6 * n)

    def tokens_per_parameter(self, flops):
        n, d = self.compute_optimal(flops)
        return d / n


def _huber(residual: np.ndarray, delta: float) -> np.ndarray:
    small = np.abs(residual) <= delta
    return np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float):
    e, a, b, alpha, beta = theta
    terms = np.stack([np.full_like(log_n, e), a - alpha * log_n, b - beta * log_d])
    top = terms.max(axis=0)
    predicted = top + np.log(np.exp(terms - top).sum(axis=0))  # log-sum-exp, without scipy's per-call overhead
    residual = predicted - log_loss
    # The gradient by hand: numerical gradients cost 6 evaluations each, and a bootstrap fits hundreds of times.
    weights = np.exp(terms - predicted)  # d predicted / d (each term)
    slope = np.clip(residual, -delta, delta)  # d huber / d residual
    gradient = np.array(
        [
            np.sum(slope * weights[0]),
            np.sum(slope * weights[1]),
            np.sum(slope * weights[2]),
            np.sum(slope * weights[1] * -log_n),
            np.sum(slope * weights[2] * -log_d),
        ]
    )
    return float(np.sum(_huber(residual, delta))), gradient


@threadpool_limits.wrap(limits=1, user_api="blas")  # BLAS threads on 3-column problems: ~5x slower, not faster
def fit_law(n, d, loss, delta: float = HUBER_DELTA) -> Law:
    """The law's parameters fitted to runs' (N, D, final loss)."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    if not (n.shape == d.shape == loss.shape) or n.ndim != 1:
        raise ValueError(f"fit_law: n, d and loss must be 1-D of one length, got {n.shape}, {d.shape}, {loss.shape}")
    if len(n) < 5:
        raise ValueError(f"fit_law: the law has 5 parameters; got {len(n)} points, give at least 5")
    if np.any(n <= 0) or np.any(d <= 0) or np.any(loss <= 0):
        raise ValueError("fit_law: parameters, tokens and losses must all be positive")
    # Centred logs decouple each coefficient from its exponent, which the optimiser otherwise crawls along.
    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
    n_centre, d_centre = log_n.mean(), log_d.mean()
    data = (log_n - n_centre, log_d - d_centre, log_loss, delta)
    starts = []
    for alpha, beta in itertools.product(EXPONENT_GRID, EXPONENT_GRID):
        features = np.stack([np.ones_like(log_n), np.exp(-alpha * data[0]), np.exp(-beta * data[1])], axis=1)
        coefficients, _ = nnls(features / loss[:, None], np.ones_like(loss))  # relative residuals ~ log residuals
        theta = np.array([*np.log(np.maximum(coefficients, 1e-8)), alpha, beta])
        starts.append((_objective(theta, *data)[0], tuple(theta)))
    best = None
    bounds = [(-LOG_COEFFICIENT_BOUND, LOG_COEFFICIENT_BOUND)] * 3 + [EXPONENT_BOUNDS] * 2
    for _, theta in sorted(starts)[:POLISHED]:
        result = minimize(
            _objective, np.array(theta), args=data, jac=True, method="L-BFGS-B", bounds=bounds, options=LBFGS_OPTIONS
        )
        if best is None or result.fun < best.fun:
            best = result
    e, a, b, alpha, beta = best.x
    return Law(
        E=math.exp(e),
        A=math.exp(a + alpha * n_centre),
        alpha=float(alpha),
        B=math.exp(b + beta * d_centre),
        beta=float(beta),
    )


def bootstrap(runs: list[list[tuple[float, float, float]]], samples: int, seed: int = 0, **fit_kwargs) -> list[Law]:
    """Laws refitted on `samples` resamplings of whole runs (each run: its (N, D, loss) points), with replacement.
    A resampling with fewer than two distinct sizes cannot separate A from B and is drawn again."""
    rng = np.random.default_rng(seed)
    laws = []
    while len(laws) < samples:
        chosen = [runs[i] for i in rng.integers(0, len(runs), len(runs))]
        if len({point[0] for run in chosen for point in run}) < 2:
            continue
        points = np.array([point for run in chosen for point in run])
        laws.append(fit_law(points[:, 0], points[:, 1], points[:, 2], **fit_kwargs))
    return laws


@threadpool_limits.wrap(limits=1, user_api="blas")
def fit_accuracy(task_loss, accuracy) -> tuple[float, float, float]:
    """The second step of the OLMo ladder (Bhagia et al. 2024, arXiv 2412.04403): accuracy as a sigmoid of task
    loss, acc = floor + (1 - floor) / (1 + exp(k (loss - midpoint))). The floor is fitted (in [0, 1)), not fixed at
    the constant-answer level: a model that has not learned the answer's form scores below that level, near 0.
    Returns (k, midpoint, floor), fitted by least squares from a grid of starts."""
    task_loss, accuracy = np.asarray(task_loss, float), np.asarray(accuracy, float)

    def squared_error(theta):
        return float(np.sum((predicted_accuracy(task_loss, *theta) - accuracy) ** 2))

    bounds = [(1e-3, 1e3), (None, None), (0.0, 0.99)]
    starts = itertools.product((1.0, 3.0, 10.0, 30.0), np.quantile(task_loss, [0.25, 0.5, 0.75]), (0.0, 0.2))
    fits = (minimize(squared_error, np.array(start), method="L-BFGS-B", bounds=bounds) for start in starts)
    best = min(fits, key=lambda result: result.fun)
    return float(best.x[0]), float(best.x[1]), float(best.x[2])


def predicted_accuracy(task_loss, k: float, midpoint: float, floor: float):
    return floor + (1 - floor) / (1 + np.exp(np.clip(k * (np.asarray(task_loss, float) - midpoint), -50, 50)))
