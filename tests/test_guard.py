"""SkipStepOptimizer on its own: a tiny model, plain torch, no Trainer."""

import pytest
import torch

from cogfm_hf.training import GuardConfig, SkipStepOptimizer

INPUTS, TARGETS = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.ones(8, 1)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def _guarded(model, **config) -> SkipStepOptimizer:
    config = {"enabled": True, "spike_factor": 3.0, "warmup_steps": 0, "ema_decay": 0.9, **config}
    return SkipStepOptimizer(torch.optim.AdamW(model.parameters(), lr=0.1), GuardConfig(**config), announce=False)


def _step(model, optimizer, recorded=None, scale=1.0):
    """One training step: backward, record a loss with a guard (the real one unless given), step, clear."""
    loss = torch.nn.functional.mse_loss(model(INPUTS), TARGETS) * scale
    loss.backward()
    if isinstance(optimizer, SkipStepOptimizer):
        optimizer.record_loss(loss if recorded is None else torch.tensor(recorded))
    optimizer.step()
    optimizer.zero_grad()


def _snapshot(model, optimizer):
    params = [p.detach().clone() for p in model.parameters()]
    state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(optimizer.state.values())}
    return params, state


def _assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_normal_step_is_the_wrapped_optimizers_step():
    guarded_model, plain_model = _model(), _model()
    guarded = _guarded(guarded_model)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=0.1)
    for _ in range(3):
        _step(guarded_model, guarded)
        _step(plain_model, plain)
    _assert_same(list(guarded_model.parameters()), list(plain_model.parameters()))
    _assert_same(guarded.state_dict(), plain.state_dict())
    assert guarded.skipped == [] and guarded.loss_ema is not None


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_step_is_skipped_and_leaves_weights_and_state_alone(where):
    model = _model()
    guard = _guarded(model)
    _step(model, guard)
    before, ema = _snapshot(model, guard), guard.loss_ema
    if where == "loss":
        _step(model, guard, scale=float("nan"))
    else:  # a finite loss whose gradient overflowed
        _step(model, guard, recorded=1.0, scale=float("inf"))
    _assert_same(_snapshot(model, guard), before)
    assert guard.loss_ema == ema
    assert guard.skipped == [{"step": 2, "reason": "non-finite loss or gradient"}]
    _step(model, guard)  # training continues
    assert not torch.equal(next(model.parameters()), before[0][0])


def test_a_spike_is_skipped_only_after_warmup():
    model = _model()
    guard = _guarded(model, warmup_steps=2)
    taken = []
    for recorded in (1.0, 10.0, 10.0, 1.0):  # the first 10 is in warmup; the average is then 1.9
        before = next(model.parameters()).detach().clone()
        _step(model, guard, recorded=recorded)
        taken.append(not torch.equal(next(model.parameters()), before))
    assert taken == [True, True, False, True]
    assert [s["step"] for s in guard.skipped] == [3]
    assert guard.skipped[0]["reason"] == "loss 10.000 > 3.0 x recent 1.900"


def test_every_rank_follows_the_reduced_verdict():
    model = _model()
    # This rank's gradients are finite; the simulated other rank's are not.
    other_rank = lambda stats: (stats + torch.stack([stats[0], torch.zeros_like(stats[1])])) / 2  # noqa: E731
    guard = SkipStepOptimizer(
        torch.optim.AdamW(model.parameters(), lr=0.1), GuardConfig(), reduce_mean=other_rank, announce=False
    )
    before = _snapshot(model, guard)
    _step(model, guard)
    _assert_same(_snapshot(model, guard), before)
    assert [s["step"] for s in guard.skipped] == [1]


def test_the_lr_scheduler_runs_on_the_wrapper_and_the_state_dict_is_the_plain_optimizers():
    model = _model()
    guard = _guarded(model, warmup_steps=1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(guard, lambda step: 1.0 / (step + 1))
    for recorded in (1.0, 100.0, 1.0):  # the second update is skipped; the schedule still advances
        _step(model, guard, recorded=recorded)
        scheduler.step()
    assert [s["step"] for s in guard.skipped] == [2]
    assert guard.param_groups[0]["lr"] == pytest.approx(0.1 / 4)

    state = guard.state_dict()
    plain = torch.optim.AdamW(_model().parameters(), lr=0.1)
    plain.load_state_dict(state)
    _assert_same(plain.state_dict(), state)
    assert next(iter(plain.state.values()))["step"] == 2  # two updates taken of three
    again = _guarded(_model())
    again.load_state_dict(plain.state_dict())
    _assert_same(again.state_dict(), state)
