"""The update guard: an optimizer wrapper that refuses bad updates.

One NaN or a burst of bad data can wreck a run in a single step; skipping that one update costs
nothing. The idea follows OLMo-core's skip-step optimizer, reduced to what CogFMTrainer needs:
non-finite values always skip, and a loss spike past a multiple of the recent average skips.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .recipe import GuardConfig


class GuardStop(RuntimeError):
    """Too many updates in a row were skipped: the run stops rather than train on with frozen weights."""


class SkipStepOptimizer(torch.optim.Optimizer):
    """Wraps an optimizer and skips an update whose loss or gradient is non-finite or whose loss spikes.

    Contract:

    - Call :meth:`record_loss` with the loss of every micro-batch of an optimizer step (after its
      backward, before :meth:`step`). The recorded losses are summed: the step's loss is that sum.
    - :meth:`step` judges the update on that loss and on the gradients of the wrapped parameters,
      then forgets the recorded losses. The update is bad when the loss or any gradient is NaN/Inf,
      or, once ``warmup_steps`` optimizer steps are done and an average exists, when the loss
      exceeds ``spike_factor`` x the exponential moving average (``ema_decay``) of the losses of
      the steps taken so far. A good update is stepped and feeds the average; a ``step()`` with no
      loss recorded (torch.distributed.checkpoint calls one to create optimizer state) and any step
      while the guard is disabled pass straight through, unjudged.
    - A skipped update does not call the wrapped optimizer: weights and optimizer state (Adam's
      moments and step count) stay as they were, the closure is not run, the average is not moved.
      The gradients are left for the caller to clear, as after any step. The skip is appended to
      :attr:`skipped` as ``{"step": n, "reason": ...}`` (``n`` = steps done + 1) and printed when
      ``announce`` is true; :attr:`last_step_skipped` says so until the next step. The caller's step
      counter still counts the step; CogFMTrainer tells accelerate, so the LR schedule does not advance.
    - ``max_consecutive_skips`` skips in a row raise :class:`GuardStop`: a loss that stays above the
      spike threshold has moved for good (or the data broke), and skipping every later update would
      end the run with the weights of that step and exit 0.
    - Across ranks: give ``reduce_mean``, a mean all-reduce over all ranks. The step's loss and the
      fraction of ranks whose gradients are finite are reduced together in one call, so every rank
      takes the same decision and keeps the same average. Each rank checks only its own gradients
      (the local shard of a DTensor); the reduction covers the rest.

    Everything else belongs to the wrapped optimizer: ``param_groups``, ``state`` and ``defaults``
    are its own objects, and ``state_dict()``/``load_state_dict()`` are its own, so a checkpoint
    loads into the bare optimizer and back. The guard's own state (average, skips, the current run of
    skips) is :meth:`guard_state` / :meth:`load_guard_state`, which CogFMTrainer keeps in every
    checkpoint (``guard_state.json``), so a resumed run judges as a straight one would. The wrapper
    is a ``torch.optim.Optimizer`` so that an LR scheduler (which checks the type and patches
    ``step`` on the instance it gets), accelerate's ``AcceleratedOptimizer`` and its FSDP2 parameter
    swap (which look for Optimizer instances and rewrite ``param_groups`` in place) all accept it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: GuardConfig,
        *,
        steps_done: Callable[[], int] | None = None,
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
        announce: bool = True,
    ):
        """``steps_done`` returns the optimizer steps completed before this one, skipped ones included;
        without it the wrapper counts its own judged steps, which restart at 0 in a resumed run.
        ``reduce_mean`` is required when more than one process trains."""
        # Deliberately no Optimizer.__init__: it would build param_groups of its own; everything is delegated.
        self.optimizer = optimizer
        self.config = config
        self.reduce_mean = reduce_mean
        self.announce = announce
        self.skipped: list[dict] = []
        self.loss_ema: float | None = None
        self.consecutive_skips = 0
        self.last_step_skipped = False
        self._steps_done = steps_done or (lambda: self._judged)
        self._judged = 0
        self._loss: torch.Tensor | None = None

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, param_groups):
        self.optimizer.param_groups = param_groups

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, state):
        self.optimizer.state = state

    @property
    def defaults(self):
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, defaults):
        self.optimizer.defaults = defaults

    def add_param_group(self, param_group):
        self.optimizer.add_param_group(param_group)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def record_loss(self, loss: torch.Tensor) -> None:
        """Add one micro-batch's loss to this step's. Kept on its device: read once, in step()."""
        loss = loss.detach().double()
        self._loss = loss if self._loss is None else self._loss + loss

    def guard_state(self) -> dict:
        return {"loss_ema": self.loss_ema, "skipped": self.skipped, "consecutive_skips": self.consecutive_skips}

    def load_guard_state(self, state: dict) -> None:
        self.loss_ema, self.skipped = state["loss_ema"], list(state["skipped"])
        self.consecutive_skips = state["consecutive_skips"]

    def step(self, closure=None):
        loss, self._loss = self._loss, None
        self.last_step_skipped = False
        if loss is None or not self.config.enabled:
            return self.optimizer.step(closure)
        step = self._steps_done() + 1
        self._judged += 1
        reason = self._judge(loss, spikes_count=step > self.config.warmup_steps)
        if reason is None:
            self.consecutive_skips = 0
            return self.optimizer.step(closure)
        self.skipped.append({"step": step, "reason": reason})
        self.consecutive_skips += 1
        self.last_step_skipped = True
        if self.announce:
            print(f"[guard] skipped the update of step {step}: {reason}", flush=True)
        if self.consecutive_skips >= self.config.max_consecutive_skips:
            raise GuardStop(
                f"guard: {self.consecutive_skips} updates in a row skipped (steps {step - self.consecutive_skips + 1}"
                f"-{step}; the last: {reason}). The loss has moved for good or the data is broken: resume from the "
                "last checkpoint with a lower learning_rate, a larger guard.spike_factor or guard.enabled false"
            )
        return None

    def _judge(self, loss: torch.Tensor, spikes_count: bool) -> str | None:
        """The reason to skip this update, or None to take it (and fold its loss into the average)."""
        stats = torch.stack([loss.reshape(()), self._grads_finite().to(loss)])
        if self.reduce_mean is not None:
            stats = self.reduce_mean(stats)
        loss_value, finite_share = stats.tolist()  # the guard's one host sync per step
        if not math.isfinite(loss_value) or finite_share < 1:
            return "non-finite loss or gradient"
        factor, ema = self.config.spike_factor, self.loss_ema
        if spikes_count and ema is not None and loss_value > factor * ema:
            return f"loss {loss_value:.3f} > {factor} x recent {ema:.3f}"
        decay = self.config.ema_decay
        self.loss_ema = loss_value if ema is None else decay * ema + (1 - decay) * loss_value
        return None

    def _grads_finite(self) -> torch.Tensor:
        """Whether every gradient is finite, as one tensor on the gradients' device (no host sync): their total norm,
        computed by torch's multi-tensor kernels, is finite exactly when they are (a NaN or an Inf anywhere makes it
        so; finite gradients whose norm overflows float32 count as non-finite, rightly skipped too)."""
        # A sharded (DTensor) gradient is checked shard by shard: reduce_mean combines the ranks.
        grads = [
            param.grad.to_local() if hasattr(param.grad, "to_local") else param.grad
            for group in self.param_groups
            for param in group["params"]
            if param.grad is not None
        ]
        if not grads:
            return torch.ones((), dtype=torch.bool)
        return torch.isfinite(torch.nn.utils.get_total_norm(grads, foreach=True))
