"""Atomic checkpoint writes, weights_only loading, RNG round trip (replay snapshots:
test_training_snapshot.py)."""
import random

import numpy as np
import pytest
import torch

from imwm.training.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


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
    with pytest.raises(CheckpointError, match=r"cannot write .*latest\.pt\.tmp: OSError: disk full"):
        save_checkpoint(path, {"agent": {"w": torch.zeros(3)}})
    assert not (tmp_path / "ckpt" / "latest.pt.tmp").exists()
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["agent"]["w"], state["agent"]["w"])


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"

    from fractions import Fraction  # any class outside the weights_only allow-list

    torch.save({"x": Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: unreadable checkpoint .*[Ww]eights only"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="missing.pt: no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_round_trip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]

