"""CurriculumSampler: which training sequences are drawn at which step (docs/design.md, "Curriculum").

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

from .recipe import CurriculumConfig


class CurriculumSampler(Sampler[int]):
    def __init__(
        self,
        difficulties: Sequence[float],
        samples_per_step: int,
        total_steps: int,
        config: CurriculumConfig,
        seed: int = 0,
    ):
        if samples_per_step < 1 or total_steps < 1:
            raise ValueError(f"need samples_per_step >= 1 and total_steps >= 1, got {samples_per_step}, {total_steps}")
        self.difficulties = np.asarray(difficulties, dtype=np.float64)
        self.n = len(self.difficulties)
        if self.n == 0:
            raise ValueError("CurriculumSampler needs at least one example")
        self.samples_per_step, self.total_steps, self.seed = samples_per_step, total_steps, seed
        self.config = config
        self.pacing_steps = max(1.0, config.pacing_fraction * total_steps)
        anneal = config.anneal_fraction
        self.anneal_start = math.inf if anneal == 0 else (1 - anneal) * total_steps
        self.epoch = 0

        # CDF rank of each difficulty: the fraction of examples strictly easier.
        sorted_difficulties = np.sort(self.difficulties)
        self.ranks = np.searchsorted(sorted_difficulties, self.difficulties, side="left") / self.n
        tiebreak = np.random.default_rng([seed, 0xC0]).random(self.n)
        self.easiest_first = np.lexsort((tiebreak, self.difficulties))
        # The pool at competence c is a prefix of `pool_order`: the easiest sequences, or random ones (control).
        if config.control:
            self.pool_order = np.random.default_rng([seed, 0xC1]).permutation(self.n)
        else:
            self.pool_order = self.easiest_first
        self.sorted_ranks = np.sort(self.ranks)
        self.hardest = self.easiest_first[::-1][: max(1, int(round(config.anneal_hard_fraction * self.n)))]
        self._cache_epoch, self._cache = None, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def competence(self, step: float) -> float:
        config, t = self.config, min(1.0, step / self.pacing_steps)
        if config.pacing == "uniform":
            return 1.0
        if config.pacing == "step":
            stage = min(config.stages - 1, int(t * config.stages))
            return config.c0 + (1 - config.c0) * stage / max(1, config.stages - 1)
        power = {"linear": 1.0, "sqrt": 2.0, "root": config.p}[config.pacing]
        return min(1.0, (t * (1 - config.c0**power) + config.c0**power) ** (1 / power))

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
        if step >= self.anneal_start and uniforms[position, 0] < self.config.anneal_weight:
            return int(self.hardest[int(uniforms[position, 1] * len(self.hardest))])
        if self.config.pacing == "uniform" and not self.config.control:
            return int(permutation[position])
        pool = self.pool_size(step)
        return int(self.pool_order[int(uniforms[position, 1] * pool)])

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        return (self.index_at(epoch, position) for position in range(self.n))
