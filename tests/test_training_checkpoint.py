"""Atomic checkpoint writes, weights_only loading, RNG round trip, replay snapshots."""
import os
import random

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SliceSampler

from imwm.training.checkpoint import (load_checkpoint, load_replay, rng_state, save_checkpoint,
                                      save_replay, set_rng_state)


def test_atomic_write_and_weights_only_load(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "latest.pt"
    state = {"agent": {"w": torch.randn(3)}, "counters": {"env_steps": 5, "credit": 0.25},
             "config": {"model": {"deter": 32}, "name": "x", "fracs": [0.5, 0.5]}, "rng": rng_state()}
    save_checkpoint(path, state)
    assert not (tmp_path / "ckpt" / "latest.pt.tmp").exists()
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["agent"]["w"], state["agent"]["w"])
    assert loaded["counters"] == {"env_steps": 5, "credit": 0.25}
    assert load_checkpoint(path)["config"]["fracs"] == [0.5, 0.5]

    # A crash during torch.save leaves the previous checkpoint untouched.
    def boom(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"agent": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["agent"]["w"], state["agent"]["w"])


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"

    from fractions import Fraction  # any class outside the weights_only allow-list

    torch.save({"x": Fraction(1, 3)}, path)
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_round_trip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def _buffer():
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(100),
        sampler=SliceSampler(slice_len=4, traj_key="traj_ids", strict_length=True,
                             truncated_key=None, init_key=None),
        batch_size=8,
    )


def test_replay_snapshot_round_trip(tmp_path):
    buf = _buffer()
    buf.extend(TensorDict({"observation": torch.arange(20).float().unsqueeze(-1),
                           "traj_ids": torch.arange(20) // 10}, batch_size=[20]))
    save_replay(buf, tmp_path / "replay")
    buf.extend(TensorDict({"observation": torch.zeros(5, 1), "traj_ids": torch.full((5,), 7)},
                          batch_size=[5]))
    save_replay(buf, tmp_path / "replay")  # overwrite an existing snapshot
    assert sorted(os.listdir(tmp_path)) == ["replay"]
    fresh = _buffer()
    load_replay(fresh, tmp_path / "replay")
    assert len(fresh) == 25
    assert torch.equal(fresh[:25]["observation"], buf[:25]["observation"])
    sample = fresh.sample()
    assert sample.shape == (8,)
    # No pickle is left in the snapshot, and one planted there is refused, not unpickled.
    assert not (tmp_path / "replay" / "prefetch.pkl").exists()
    (tmp_path / "replay" / "prefetch.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="prefetch.pkl"):
        load_replay(_buffer(), tmp_path / "replay")
