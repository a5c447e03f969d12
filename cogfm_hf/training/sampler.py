"""CurriculumSampler: which training sequences are drawn at which step (DESIGN.md §4).

Every sequence has a difficulty, mapped to its CDF rank in [0, 1): the fraction of sequences strictly
easier (so a tie group — e.g. all corpus text, difficulty 0 — shares the rank of its easiest member, and
the easiest group is eligible from the first step). At optimizer step t the sampler draws only from the
sequences with rank <= c(t), the competence (Platanios et al. 2019):

    uniform   c = 1 (no curriculum: a fresh permutation each epoch)
    linear    c = min(1, t (1 - c0) / T + c0)
    sqrt      c = min(1, sqrt(t (1 - c0^2) / T + c0^2))
    root      c = min(1, (t (1 - c0^p) / T + c0^p)^(1/p))        (linear is p=1, sqrt p=2)
    step      c0, then `stages` equal steps up to 1

with T = pacing_fraction x total steps. `control=True` is the random-order control: the pool grows
exactly as the curriculum's, but holds random sequences rather than the easiest. `anneal_fraction` > 0
adds an anneal phase: in that final fraction of training, each draw comes with probability
`anneal_weight` from the hardest `anneal_hard_fraction` of the data (as WSD schedules do while the LR
decays).

The sampler is a pure function of (seed, epoch, position): every rank computes the same global sequence
(Accelerate deals its batches to the ranks), and a resumed run regenerates exactly the order it had.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

PACINGS = ("uniform", "linear", "sqrt", "root", "step")


class CurriculumSampler(Sampler[int]):
    def __init__(
        self,
        difficulties: Sequence[float],
        samples_per_step: int,
        total_steps: int,
        seed: int = 0,
        pacing: str = "uniform",
        c0: float = 0.1,
        p: float = 2.0,
        stages: int = 4,
        pacing_fraction: float = 1.0,
        control: bool = False,
        anneal_fraction: float = 0.0,
        anneal_hard_fraction: float = 0.3,
        anneal_weight: float = 0.5,
    ):
        if pacing not in PACINGS:
            raise ValueError(f"curriculum.pacing must be one of {PACINGS}, got {pacing!r}")
        if not 0.0 < c0 <= 1.0:
            raise ValueError(f"curriculum.c0 must be in (0, 1], got {c0!r}")
        if (
            not 0.0 <= anneal_fraction < 1.0
            or not 0.0 < anneal_hard_fraction <= 1.0
            or not 0.0 <= anneal_weight <= 1.0
        ):
            raise ValueError(
                "curriculum: anneal_fraction must be in [0, 1), anneal_hard_fraction in (0, 1], "
                "anneal_weight in [0, 1]"
            )
        if samples_per_step < 1 or total_steps < 1:
            raise ValueError(f"need samples_per_step >= 1 and total_steps >= 1, got {samples_per_step}, {total_steps}")
        self.difficulties = np.asarray(difficulties, dtype=np.float64)
        self.n = len(self.difficulties)
        if self.n == 0:
            raise ValueError("CurriculumSampler needs at least one example")
        self.samples_per_step, self.total_steps, self.seed = samples_per_step, total_steps, seed
        self.pacing, self.c0, self.p, self.stages = pacing, c0, p, stages
        self.pacing_steps = max(1.0, pacing_fraction * total_steps)
        self.control = control
        self.anneal_start = math.inf if anneal_fraction == 0 else (1 - anneal_fraction) * total_steps
        self.anneal_weight = anneal_weight
        self.epoch = 0

        # CDF rank of each difficulty: the fraction of examples strictly easier.
        sorted_difficulties = np.sort(self.difficulties)
        self.ranks = np.searchsorted(sorted_difficulties, self.difficulties, side="left") / self.n
        tiebreak = np.random.default_rng([seed, 0xC0]).random(self.n)
        self.easiest_first = np.lexsort((tiebreak, self.difficulties))
        # The pool at competence c is a prefix of `pool_order`: the easiest sequences, or random ones (control).
        self.pool_order = np.random.default_rng([seed, 0xC1]).permutation(self.n) if control else self.easiest_first
        self.sorted_ranks = np.sort(self.ranks)
        self.hardest = self.easiest_first[::-1][: max(1, int(round(anneal_hard_fraction * self.n)))]
        self._cache_epoch, self._cache = None, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def competence(self, step: float) -> float:
        t = min(1.0, step / self.pacing_steps)
        if self.pacing == "uniform":
            return 1.0
        if self.pacing == "step":
            stage = min(self.stages - 1, int(t * self.stages))
            return self.c0 + (1 - self.c0) * stage / max(1, self.stages - 1)
        power = {"linear": 1.0, "sqrt": 2.0, "root": self.p}[self.pacing]
        return min(1.0, (t * (1 - self.c0**power) + self.c0**power) ** (1 / power))

    def pool_size(self, step: float) -> int:
        """How many sequences are eligible at this step (at least one step's worth, when the data allows)."""
        eligible = int(np.searchsorted(self.sorted_ranks, self.competence(step) + 1e-12, side="right"))
        return max(eligible, min(self.n, self.samples_per_step))

    def _epoch_draws(self, epoch: int):
        if self._cache_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cache = (rng.permutation(self.n), rng.random((self.n, 2)))
            self._cache_epoch = epoch
        return self._cache

    def index_at(self, epoch: int, position: int) -> int:
        permutation, uniforms = self._epoch_draws(epoch)
        step = (epoch * self.n + position) // self.samples_per_step
        if step >= self.anneal_start and uniforms[position, 0] < self.anneal_weight:
            return int(self.hardest[int(uniforms[position, 1] * len(self.hardest))])
        if self.pacing == "uniform" and not self.control:
            return int(permutation[position])
        pool = self.pool_size(step)
        return int(self.pool_order[int(uniforms[position, 1] * pool)])

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        return (self.index_at(epoch, position) for position in range(self.n))
