"""Slice validity: starts never cross an episode end or the circular write head."""

import pytest
import torch
from scipy.stats import chisquare
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from imwm.replay import CuriousSampler, ExploreExploitSampler, UniformSliceSampler


class Stream:
    """Writes episodes chunk by chunk, as a collector would: global time `t`, ids, is_last."""

    def __init__(self, seed=0, same_id=False):
        self.g = torch.Generator().manual_seed(seed)
        self.t = 0
        self.traj = 0
        self.left = 0
        self.same_id = same_id

    def chunk(self, n):
        ids, last = [], []
        for _ in range(n):
            if self.left == 0:
                self.traj += 1
                self.left = int(torch.randint(1, 25, (), generator=self.g))
            self.left -= 1
            ids.append(0 if self.same_id else self.traj)
            last.append(self.left == 0)
        td = TensorDict({
            "traj_ids": torch.tensor(ids, dtype=torch.long),
            "is_last": torch.tensor(last).unsqueeze(-1),
            "t": torch.arange(self.t, self.t + n),
        }, [n])
        self.t += n
        return td


def brute_force_valid(storage_td, filled, head, capacity, slice_len, key="traj_ids"):
    valid = torch.zeros(capacity, dtype=torch.bool)
    for s in range(capacity):
        pos = [(s + j) % capacity for j in range(slice_len)]
        if not all(filled[p] for p in pos):
            continue
        if any(pos[j] == head for j in range(1, slice_len)):
            continue
        if key == "traj_ids":
            ids = storage_td["traj_ids"][pos]
            valid[s] = bool((ids == ids[0]).all())
        else:
            ends = storage_td["is_last"][pos].reshape(-1)
            valid[s] = not bool(ends[:-1].any())
    return valid


def make(sampler, capacity, batch_slices, slice_len, seed=0):
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity), sampler=sampler,
        batch_size=batch_slices * slice_len, generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("key", ["traj_ids", "is_last"])
def test_valid_mask_matches_brute_force_through_wraparound(key):
    capacity, T = 53, 6
    kw = {"traj_key": "traj_ids"} if key == "traj_ids" else {"traj_key": None, "end_key": "is_last"}
    sampler = UniformSliceSampler(capacity, slice_len=T, **kw)
    rb = make(sampler, capacity, 4, T)
    stream = Stream(seed=1)
    g = torch.Generator().manual_seed(2)
    filled = [False] * capacity
    written = 0
    for step in range(25):
        n = int(torch.randint(1, 20, (), generator=g))
        rb.extend(stream.chunk(n))
        for j in range(n):
            filled[(written + j) % capacity] = True
        written += n
        head = written % capacity
        if sum(filled) < capacity:
            head = -1  # not wrapped: the unwritten part already cuts slices
        if step % 2:
            rb.sample()  # validity is refreshed lazily: mix sampled and unsampled extends
        sampler._refresh(rb.storage)
        expect = brute_force_valid(rb.storage._storage, filled, head, capacity, T, key)
        assert torch.equal(sampler._valid, expect), f"step {step}"
        assert sampler._num_valid == int(expect.sum())


@pytest.mark.parametrize("cls", [UniformSliceSampler, CuriousSampler, ExploreExploitSampler])
def test_slices_never_cross_episode_end_or_write_head(cls):
    capacity, T = 97, 8
    rb = make(cls(capacity, slice_len=T), capacity, 6, T, seed=3)
    stream = Stream(seed=4)
    for _ in range(40):
        rb.extend(stream.chunk(13))
        batch = rb.sample().reshape(6, T)
        ids = batch["traj_ids"]
        assert (ids == ids[:, :1]).all(), "slice crossed an episode boundary"
        assert (batch["t"].diff(dim=1) == 1).all(), "slice crossed the write head / not contiguous"
        if hasattr(rb.sampler, "update_priority") and cls is not UniformSliceSampler:
            rb.sampler.update_priority(batch["index"].view(6, T, -1)[:, 0, 0], torch.rand(6))


def test_one_long_episode_over_the_wrap_does_not_cross_the_head():
    # a single trajectory id everywhere: only the write-head rule can stop a crossing
    capacity, T = 40, 10
    rb = make(CuriousSampler(capacity, slice_len=T), capacity, 4, T)
    stream = Stream(same_id=True)
    for step in range(30):
        rb.extend(stream.chunk(7))
        if step < 2:
            continue  # fewer than T records so far
        batch = rb.sample().reshape(4, T)
        assert (batch["t"].diff(dim=1) == 1).all()
    # the latest record can never start a slice; the oldest can
    newest = (30 * 7 - 1) % capacity
    assert not rb.sampler._valid[newest]
    assert rb.sampler._valid[(newest + 1) % capacity]


def test_short_episodes_are_never_sampled_and_empty_raises():
    capacity, T = 50, 5
    rb = make(UniformSliceSampler(capacity, slice_len=T), capacity, 2, T)
    ids = torch.tensor([0] * 3 + [1] * 4 + [2] * 5)
    rb.extend(TensorDict({"traj_ids": ids, "t": torch.arange(12)}, [12]))
    for _ in range(20):
        batch = rb.sample()
        assert (batch["traj_ids"] == 2).all()
    rb2 = make(UniformSliceSampler(capacity, slice_len=T), capacity, 2, T)
    rb2.extend(TensorDict({"traj_ids": ids[:7], "t": torch.arange(7)}, [7]))
    with pytest.raises(RuntimeError, match="no valid slice start"):
        rb2.sample()


def test_uniform_slice_sampler_is_uniform_over_valid_starts():
    capacity, T = 60, 4
    rb = make(UniformSliceSampler(capacity, slice_len=T), capacity, 20, T)
    ids = torch.tensor([0] * 30 + [1] * 6 + [2] * 24)   # valid starts: 27 + 3 + 21 = 51
    rb.extend(TensorDict({"traj_ids": ids}, [60]))
    counts = torch.zeros(capacity)
    for _ in range(300):
        _, info = rb.sample(return_info=True)
        counts += torch.bincount(info["index"][0].view(-1, T)[:, 0], minlength=capacity)
    valid = rb.sampler._valid
    assert int(valid.sum()) == 51 and counts[~valid].sum() == 0
    _, pval = chisquare(counts[valid].numpy())
    assert pval > 1e-3


@pytest.mark.filterwarnings("ignore:Got conflicting batch_sizes")
def test_storage_mismatch_and_batch_divisibility_errors():
    rb = make(CuriousSampler(30, slice_len=5), 30, 2, 5)
    rb.extend(TensorDict({"traj_ids": torch.zeros(20, dtype=torch.long)}, [20]))
    with pytest.raises(RuntimeError, match="divisible by the slice length"):
        rb.sample(7)
    wrong = TensorDictReplayBuffer(storage=LazyTensorStorage(40),
                                   sampler=CuriousSampler(30, slice_len=5), batch_size=10)
    wrong.extend(TensorDict({"traj_ids": torch.zeros(20, dtype=torch.long)}, [20]))
    with pytest.raises(RuntimeError, match="max_capacity=30 but the storage holds 40"):
        wrong.sample()
    with pytest.raises(ValueError, match="exactly one of num_slices / slice_len"):
        CuriousSampler(30, traj_key="traj_ids")
    with pytest.raises(ValueError, match="end_key and end_keys are exclusive"):
        CuriousSampler(30, slice_len=5, end_key="is_last", end_keys=["is_last"])
    missing = make(CuriousSampler(30, slice_len=5, traj_key="episode"), 30, 2, 5)
    missing.extend(TensorDict({"traj_ids": torch.zeros(20, dtype=torch.long)}, [20]))
    with pytest.raises(KeyError, match="no entry 'episode'"):
        missing.sample()
