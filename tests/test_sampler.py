import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from cogfm_hf.training import CurriculumConfig, CurriculumSampler

DIFFICULTIES = np.repeat(np.arange(1, 11), 100)  # 1,000 examples, difficulty 1..10, 100 of each


def sampler(difficulties=DIFFICULTIES, samples_per_step=20, total_steps=100, seed=0, **curriculum):
    return CurriculumSampler(difficulties, samples_per_step, total_steps, CurriculumConfig(**curriculum), seed=seed)


def global_sequence(s, epochs=2):
    out = []
    for epoch in range(epochs):
        s.set_epoch(epoch)
        out += list(s)
    return out


def test_uniform_covers_everything_each_epoch():
    s = sampler(pacing="uniform")
    for epoch in range(3):
        s.set_epoch(epoch)
        assert sorted(s) == list(range(1000))
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first  # a fresh permutation per epoch


@pytest.mark.parametrize("pacing", ["linear", "sqrt", "root", "step"])
def test_early_batches_only_contain_easy_examples_and_the_pool_grows(pacing):
    s = sampler(pacing=pacing, c0=0.2, p=3.0)
    s.set_epoch(0)
    order = list(s)
    first_step = order[:20]
    # competence 0.2: difficulties with at most 20% of the data strictly easier, i.e. 1, 2 and 3
    assert max(DIFFICULTIES[first_step]) <= 3
    sizes = [s.pool_size(t) for t in range(0, 101, 10)]
    assert sizes == sorted(sizes) and sizes[0] == 300 and sizes[-1] == 1000
    for step in (0, 25, 50, 75):
        drawn = order[step * 20 : (step + 1) * 20]
        allowed = s.competence(step)
        ranks = s.ranks[drawn]
        assert (ranks <= allowed + 1e-9).all(), (pacing, step)


def test_pacing_formulas():
    s = sampler(pacing="sqrt", c0=0.1, total_steps=100)
    assert s.competence(0) == pytest.approx(0.1)
    assert s.competence(50) == pytest.approx(np.sqrt(50 * (1 - 0.01) / 100 + 0.01))
    assert s.competence(100) == 1.0 and s.competence(500) == 1.0
    linear = sampler(pacing="linear", c0=0.1)
    assert linear.competence(50) == pytest.approx(0.55)
    root = sampler(pacing="root", c0=0.1, p=3)
    assert root.competence(50) == pytest.approx((0.5 * (1 - 0.001) + 0.001) ** (1 / 3))
    step = sampler(pacing="step", c0=0.25, stages=4)
    assert [step.competence(t) for t in (0, 30, 55, 80)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    fast = sampler(pacing="linear", c0=0.1, pacing_fraction=0.5)
    assert fast.competence(50) == 1.0


def test_a_large_tie_group_at_the_bottom_is_eligible_from_the_start():
    # A third of the data at difficulty 0 (corpus text): all of it is in the first pool, not a fallback.
    difficulties = np.concatenate([np.zeros(330), np.repeat(np.arange(1, 9), 84)])
    s = sampler(difficulties, samples_per_step=8, total_steps=100, pacing="sqrt", c0=0.2)
    assert s.pool_size(0) == 330
    s.set_epoch(0)
    assert len(set(list(s)[:80])) > 60  # the first ten steps draw from all of it


def test_random_order_control_has_the_same_pool_size_but_random_members():
    curriculum, control = sampler(pacing="sqrt", c0=0.2), sampler(pacing="sqrt", c0=0.2, control=True)
    assert [curriculum.pool_size(t) for t in range(0, 100, 7)] == [control.pool_size(t) for t in range(0, 100, 7)]
    control.set_epoch(0)
    early = list(control)[:200]
    assert DIFFICULTIES[early].mean() > 4  # not the easy ones: about the overall mean of 5.5


def test_anneal_upweights_the_hardest_at_the_end():
    s = sampler(pacing="uniform", anneal_fraction=0.2, anneal_hard_fraction=0.1, anneal_weight=0.5)
    sequence = global_sequence(s, epochs=2)  # 2,000 draws = 100 steps
    before, during = DIFFICULTIES[sequence[:1600]], DIFFICULTIES[sequence[1600:]]
    assert (before == 10).mean() == pytest.approx(0.1, abs=0.03)
    assert (during == 10).mean() > 0.5  # half from the hardest 10%, plus its share of the rest


def test_the_sequence_is_a_pure_function_of_seed_epoch_position():
    a, b = sampler(pacing="sqrt"), sampler(pacing="sqrt")
    assert global_sequence(a) == global_sequence(b)  # another process computes the same sequence
    b.set_epoch(1)
    resumed = [b.index_at(1, position) for position in range(400, 1000)]  # jump in mid-epoch
    assert resumed == global_sequence(a)[1400:]
    assert global_sequence(sampler(pacing="sqrt", seed=1)) != global_sequence(a)


@pytest.mark.parametrize("pacing", ["uniform", "sqrt"])
def test_two_ranks_see_disjoint_batches(pacing):
    s = sampler(pacing=pacing)
    s.set_epoch(0)
    batches = list(BatchSampler(s, batch_size=10, drop_last=False))
    shards = [
        list(BatchSamplerShard(BatchSampler(s, 10, False), num_processes=2, process_index=rank)) for rank in (0, 1)
    ]
    assert shards[0] == batches[0::2] and shards[1] == batches[1::2]  # Accelerate deals the global batches
    if pacing == "uniform":  # without replacement, so no example is seen by both ranks
        assert not set(sum(shards[0], [])) & set(sum(shards[1], []))


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="curriculum.pacing"):
        sampler(pacing="cosine")
    with pytest.raises(ValueError, match="curriculum.c0"):
        sampler(c0=0)
