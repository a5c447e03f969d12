"""Statistics of experiment runs: per-item outcomes, means over seeds, paired bootstrap intervals.

- Mean ± std over seeds (sample std).
- Arm minus baseline: a paired bootstrap over test items (the same items for both; resampled with replacement,
  2,000 times), of the difference averaged over the seeds both arms ran; each comparison has its own random
  stream, seeded by its names.
"""

from __future__ import annotations

import zlib

import numpy as np

BOOTSTRAP_SAMPLES = 2000


def ratio(values) -> float:
    """The mean of 0/1 outcomes (nan for none)."""
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std over seeds (std 0 for one seed; nan for none)."""
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def items(record: dict, tasks: list[str]) -> np.ndarray:
    """A run's per-item test outcomes over `tasks`, in a fixed order (so two runs' items pair up)."""
    return np.array([c for task in tasks for c in record["test"][task]["correct"]], dtype=np.float64)


def paired_bootstrap(arm_runs: list[dict], base_runs: list[dict], tasks: list[str], rng: np.random.Generator):
    """95% interval of mean-over-seeds (arm accuracy - baseline accuracy), items resampled jointly."""
    base_by_seed = {r["seed"]: r for r in base_runs}
    pairs = [(items(r, tasks), items(base_by_seed[r["seed"]], tasks)) for r in arm_runs if r["seed"] in base_by_seed]
    if not pairs or not tasks:
        return None
    differences = np.stack([a - b for a, b in pairs])  # seeds x items
    n = differences.shape[1]
    draws = rng.integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    estimates = differences[:, draws].mean(axis=2).mean(axis=0)
    return float(differences.mean()), *percentile_interval(estimates)


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap estimates (percentiles)."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, float), [tail, 100 - tail])
    return float(low), float(high)


def comparison_rng(*names: str) -> np.random.Generator:
    """One random stream per comparison, so an interval does not depend on which other arms have run."""
    return np.random.default_rng(zlib.crc32("/".join(names).encode()))
