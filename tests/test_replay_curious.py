"""CuriousSampler: the Curious Replay formula, its statistics, inf-first, visits, bad input."""

import math
import warnings

import pytest
import torch
from scipy.stats import chisquare
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from imwm.replay import CuriousSampler


def make_buffer(n_items=20, capacity=None, slice_len=1, batch_slices=10, seed=0, **kw):
    capacity = capacity or n_items
    sampler = CuriousSampler(capacity, slice_len=slice_len, **kw)
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity), sampler=sampler,
        batch_size=batch_slices * slice_len, generator=torch.Generator().manual_seed(seed),
    )
    rb.extend(TensorDict({"traj_ids": torch.zeros(n_items, dtype=torch.long),
                          "t": torch.arange(n_items)}, [n_items]))
    return rb, sampler


def starts_of(info, slice_len):
    return info["index"][0].view(-1, slice_len)[:, 0]


def test_c0_frequencies_follow_loss_power_chi_square():
    rb, s = make_buffer(n_items=20, c=0.0, alpha=0.7, epsilon=0.01, batch_slices=50)
    loss = torch.linspace(0.0, 3.0, 20)
    s.update_priority(torch.arange(20), loss)
    counts = torch.zeros(20)
    for _ in range(400):
        _, info = rb.sample(return_info=True)
        counts += torch.bincount(starts_of(info, 1), minlength=20)
    expect = (loss.double() + 0.01) ** 0.7
    expect = expect / expect.sum() * counts.sum()
    _, pval = chisquare(counts.numpy(), expect.numpy())
    assert pval > 1e-3, pval
    # power check: proportional-to-loss (alpha = 1) is rejected on the same counts
    wrong = loss.double() + 0.01
    _, p_wrong = chisquare(counts.numpy(), (wrong / wrong.sum() * counts.sum()).numpy())
    assert p_wrong < 1e-6


def test_inf_items_are_sampled_first():
    rb, s = make_buffer(n_items=10, batch_slices=3)
    s.update_priority(torch.arange(6), torch.full((6,), 5.0))  # 6..9 never trained: inf
    assert torch.isinf(s.priorities(torch.arange(6, 10))).all()
    _, info = rb.sample(return_info=True)
    first = starts_of(info, 1)
    assert set(first.tolist()) <= {6, 7, 8, 9} and first.unique().numel() == 3
    big = s.sample(rb.storage, 6)[0][0]
    assert {6, 7, 8, 9} <= set(big.tolist())


def test_visit_count_decay_is_beta_power():
    c, beta, alpha, eps = 100.0, 0.7, 0.7, 0.01
    rb, s = make_buffer(n_items=4, c=c, beta=beta, alpha=alpha, epsilon=eps, batch_slices=3)
    loss = torch.tensor([0.1, 1.0, 2.0, 0.5])
    s.update_priority(torch.arange(4), loss)
    visits = torch.zeros(4, dtype=torch.long)
    for _ in range(30):
        _, info = rb.sample(return_info=True)
        visits += torch.bincount(starts_of(info, 1), minlength=4)
        expect = c * beta ** visits.double() + (loss.double() + eps) ** alpha
        assert torch.allclose(s.priorities(torch.arange(4)), expect, rtol=1e-6)
    assert visits.max() >= 20, "some item should have been visited heavily"
    # the count term of the most visited item has decayed by beta**count
    top = int(visits.argmax())
    term = s.priorities(torch.tensor([top])) - (loss[top].double() + eps) ** alpha
    assert float(term) == pytest.approx(c * beta ** int(visits[top]), rel=1e-5)


def test_entropy_lambda_lowers_high_entropy_items_exactly():
    rb, s = make_buffer(n_items=4, c=0.0, entropy_lambda=0.5)
    loss = torch.tensor([2.0, 2.0, 2.0, 0.3])
    entropy = torch.tensor([0.0, 1.0, 3.0, 1.0])
    s.update_priority(torch.arange(4), loss, entropy=entropy)
    adjusted = torch.clamp(loss - 0.5 * entropy, min=0).double()  # [2, 1.5, 0.5, 0]
    expect = (adjusted + 0.01) ** 0.7
    assert torch.allclose(s.priorities(torch.arange(4)), expect, rtol=1e-6)
    p = s.priorities(torch.arange(3))
    assert p[0] > p[1] > p[2]
    with pytest.raises(ValueError, match="needs `entropy`"):
        s.update_priority(torch.arange(4), loss)


def test_entropy_lambda_zero_is_the_paper():
    _, s = make_buffer(n_items=3, c=10.0)
    s.update_priority(torch.arange(3), torch.tensor([0.0, 1.0, 4.0]),
                      entropy=torch.tensor([9.0, 9.0, 9.0]))
    expect = 10.0 + (torch.tensor([0.0, 1.0, 4.0]).double() + 0.01) ** 0.7
    assert torch.allclose(s.priorities(torch.arange(3)), expect)


def test_feedback_with_flat_slice_index_maps_to_starts():
    rb, s = make_buffer(n_items=40, slice_len=5, batch_slices=4)
    _, info = rb.sample(return_info=True)
    starts = starts_of(info, 5)
    s.update_priority(info["index"], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # each start carries its own loss (duplicated starts: last write wins)
    assert torch.isfinite(s.priorities(starts)).all()
    others = torch.tensor([i for i in range(40) if i not in set(starts.tolist())])
    assert torch.isinf(s.priorities(others)).all()


def test_new_record_resets_count_and_loss():
    rb, s = make_buffer(n_items=5, capacity=5, batch_slices=2)
    s.update_priority(torch.arange(5), torch.ones(5))
    rb.sample()
    rb.extend(TensorDict({"traj_ids": torch.ones(2, dtype=torch.long),
                          "t": torch.arange(2)}, [2]))  # overwrites positions 0, 1
    assert torch.isinf(s.priorities(torch.tensor([0, 1]))).all()
    assert s._visits[:2].sum() == 0


@pytest.mark.parametrize("kwargs, msg", [
    ({"c": -1.0}, "c must be"), ({"alpha": -0.1}, "alpha must be"),
    ({"epsilon": -0.01}, "epsilon must be"), ({"beta": 0.0}, r"beta must be in \(0, 1\]"),
    ({"beta": 1.5}, r"beta must be in \(0, 1\]"), ({"entropy_lambda": -1.0}, "entropy_lambda"),
    ({"initial": 0.0}, "initial must be > 0"), ({"slice_len": 0}, "slice_len"),
])
def test_bad_hyperparameters(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        CuriousSampler(10, **kwargs)


def test_bad_feedback_out_of_range_and_nan():
    _, s = make_buffer(n_items=10, nan_policy="raise")  # default "skip": see test_nonfinite_stats
    with pytest.raises(IndexError, match="index 10 out of range"):
        s.update_priority(torch.tensor([10]), torch.tensor([1.0]))
    with pytest.raises(IndexError, match="index -3"):
        s.update_priority(torch.tensor([-3]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="3 indices for 2 values"):
        s.update_priority(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0]))
    s.update_priority(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    before = s.priorities(torch.arange(10))
    total = float(s._tree.finite_total())
    with pytest.raises(ValueError, match="non-finite"):
        s.update_priority(torch.tensor([0, 1]), torch.tensor([float("nan"), 3.0]))
    assert torch.equal(s.priorities(torch.arange(10)), before)  # nothing written
    assert float(s._tree.finite_total()) == total


def test_nan_policy_ignore_warns_and_keeps_priority():
    _, s = make_buffer(n_items=4, nan_policy="ignore")
    s.update_priority(torch.arange(4), torch.ones(4))
    before = s.priorities(torch.arange(4))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s.update_priority(torch.tensor([0, 1]), torch.tensor([float("nan"), 3.0]))
    assert any("non-finite" in str(x.message) for x in w)
    after = s.priorities(torch.arange(4))
    assert after[0] == before[0] and after[1] != before[1]
    assert math.isfinite(float(s._tree.finite_total()))
