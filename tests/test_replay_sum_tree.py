"""SumTree / PriorityTree: sums, prefix search, sampling statistics, inf pool, state, bad input."""

import math

import pytest
import torch
from scipy.stats import chisquare

from imwm.replay.sum_tree import PriorityTree, SumTree, _distinct_ranks


def _internal_sums_ok(tree: SumTree) -> bool:
    for lower, upper in zip(tree.levels[:-1], tree.levels[1:]):
        expect = lower.view(-1, tree.arity).sum(-1)
        if not torch.allclose(upper[: expect.numel()], expect, rtol=0, atol=1e-9):
            return False
    return True


def test_find_hand_computed_prefixes():
    tree = SumTree(7, arity=2)  # 3 levels of blocks: exercises the multi-level descent
    tree.update(torch.arange(7), torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.5]))
    assert float(tree.total()) == 6.5
    # cumulative: [0,1) -> 0, [1,3) -> 2, [3,6) -> 5, [6,6.5) -> 6; zero leaves never found
    queries = torch.tensor([0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 6.49, 7.0, -1.0])
    assert tree.find(queries).tolist() == [0, 0, 2, 2, 5, 5, 6, 6, 6, 0]


def test_update_with_duplicates_keeps_sums_consistent():
    tree = SumTree(1000, arity=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = torch.randint(1000, (64,), generator=g)  # many duplicates
        tree.update(idx, torch.rand(64, generator=g))
        assert _internal_sums_ok(tree)
    assert math.isclose(float(tree.total()), float(tree.leaves().sum()), rel_tol=1e-12)


def test_sampling_frequencies_match_leaves_chi_square():
    g = torch.Generator().manual_seed(1)
    leaves = torch.rand(50, generator=g) * (torch.rand(50, generator=g) > 0.3)
    tree = SumTree(50, arity=3)
    tree.update(torch.arange(50), leaves)
    n = 200_000
    counts = torch.bincount(tree.sample(n, generator=g), minlength=50).double()
    p = leaves.double() / leaves.double().sum()
    assert counts[p == 0].sum() == 0, "a zero-mass leaf was sampled"
    nz = p > 0
    stat, pval = chisquare(counts[nz].numpy(), (p[nz] * n).numpy())
    assert pval > 1e-3, (stat, pval)
    # the test has power: a uniform hypothesis over the same leaves is rejected
    flat = torch.full((int(nz.sum()),), n / nz.sum())
    _, p_uniform = chisquare(counts[nz].numpy(), flat.numpy())
    assert p_uniform < 1e-6


def test_extreme_priority_range_never_lands_on_zero_mass():
    tree = SumTree(100_000, arity=32)
    idx = torch.arange(0, 100_000, 7)
    values = torch.where(idx % 2 == 0, torch.tensor(1e6, dtype=torch.float64),
                         torch.tensor(1e-3, dtype=torch.float64))
    tree.update(idx, values)
    s = tree.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert (s % 7 == 0).all()


def test_sum_tree_bad_input():
    tree = SumTree(10)
    with pytest.raises(IndexError, match="index 10 out of range"):
        tree.update(torch.tensor([10]), torch.tensor([1.0]))
    with pytest.raises(IndexError, match="index -1"):
        tree.update(torch.tensor([-1]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update(torch.tensor([1]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update(torch.tensor([1]), torch.tensor([-0.5]))
    with pytest.raises(TypeError, match="integers"):
        tree.update(torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(RuntimeError, match="total mass is 0"):
        tree.sample(3)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        SumTree(0)


def test_capacity_ten_million():
    tree = PriorityTree(10_000_000)
    assert tree.finite.depth == 5
    idx = torch.tensor([0, 12_345, 9_999_999])
    tree.update(idx, torch.tensor([1.0, 2.0, 3.0]))
    tree.update(torch.tensor([5_000_000]), torch.tensor([math.inf]))
    s = tree.sample(4, generator=torch.Generator().manual_seed(0))
    assert s[0] == 5_000_000  # inf first
    assert set(s[1:].tolist()) <= {0, 12_345, 9_999_999}
    assert float(tree.finite_total()) == 6.0


def test_priority_tree_inf_first_distinct_then_finite():
    tree = PriorityTree(20, arity=4)
    prio = torch.arange(1.0, 21.0)
    prio[[3, 8, 15]] = math.inf
    tree.update(torch.arange(20), prio)
    assert tree.num_inf == 3
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        two = tree.sample(2, generator=g)
        assert set(two.tolist()) <= {3, 8, 15} and two.unique().numel() == 2
        eight = tree.sample(8, generator=g)
        assert set(eight[:3].tolist()) == {3, 8, 15}       # all inf items, once each
        assert not set(eight[3:].tolist()) & {3, 8, 15}     # then finite ones
    assert torch.isinf(tree[torch.tensor([3, 8, 15])]).all()
    # once an inf item gets a finite priority it leaves the pool
    tree.update(torch.tensor([3]), torch.tensor([2.0]))
    assert tree.num_inf == 2 and float(tree[torch.tensor([3])]) == 2.0


def test_priority_tree_only_inf_smaller_than_batch_repeats():
    tree = PriorityTree(10)
    tree.update(torch.tensor([4, 6]), torch.tensor([math.inf, math.inf]))
    s = tree.sample(5, generator=torch.Generator().manual_seed(0))
    assert set(s.tolist()) == {4, 6}
    with pytest.raises(ValueError, match="NaN or a negative"):
        tree.update(torch.tensor([1]), torch.tensor([float("nan")]))
    empty = PriorityTree(4)
    with pytest.raises(RuntimeError, match="nothing can be sampled"):
        empty.sample(1)


def test_inf_pool_draws_are_uniform():
    tree = PriorityTree(1000, arity=8)
    pool = torch.arange(0, 1000, 10)  # 100 inf items
    tree.update(pool, torch.full((100,), math.inf))
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(1000)
    for _ in range(400):
        s = tree.sample(10, generator=g)
        assert s.unique().numel() == 10
        counts += torch.bincount(s, minlength=1000)
    _, pval = chisquare(counts[pool].numpy())
    assert pval > 1e-3


@pytest.mark.parametrize("m,k", [(5, 5), (17, 16), (10_000, 16)])
def test_distinct_ranks(m, k):
    g = torch.Generator().manual_seed(0)
    r = _distinct_ranks(m, k, g, "cpu")
    assert r.numel() == k and r.unique().numel() == k
    assert r.min() >= 0 and r.max() < m


def test_state_dict_round_trip():
    tree = PriorityTree(300, arity=4)
    prio = torch.rand(300).double()
    prio[::7] = math.inf
    tree.update(torch.arange(300), prio)
    state = tree.state_dict()
    other = PriorityTree(300, arity=4)
    other.load_state_dict(state)
    assert torch.equal(other[torch.arange(300)], tree[torch.arange(300)])
    assert other.num_inf == tree.num_inf
    assert float(other.finite_total()) == pytest.approx(float(tree.finite_total()), rel=1e-12)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(tree.sample(50, generator=g1), other.sample(50, generator=g2))


def test_bulk_update_rebuilds_levels_consistently():
    tree = SumTree(5000, arity=4)
    g = torch.Generator().manual_seed(0)
    tree.update(torch.randint(5000, (20,), generator=g), torch.rand(20, generator=g))
    big = torch.randint(5000, (4000,), generator=g)  # more than a quarter of a level: bulk path
    tree.update(big, torch.rand(4000, generator=g))
    assert _internal_sums_ok(tree)
    assert float(tree.total()) == pytest.approx(float(tree.leaves().sum()), rel=1e-12)
