"""build_replay / replay_feedback / replay_metrics: the loop-facing replay API."""

import pytest
import torch
from tensordict import TensorDict

from imwm.training.build_replay import build_replay, replay_feedback, replay_metrics, slice_starts


def episodes(lengths, start_id=0, obs_dim=3):
    """Records in the architecture.md layout, episode after episode."""
    tds = []
    for k, n in enumerate(lengths):
        is_first = torch.zeros(n, 1, dtype=torch.bool)
        is_first[0] = True
        is_last = torch.zeros(n, 1, dtype=torch.bool)
        is_last[-1] = True
        tds.append(TensorDict({
            "observation": torch.randn(n, obs_dim),
            "action": torch.zeros(n, 2),
            "reward": torch.randn(n, 1),
            "is_first": is_first,
            "is_terminal": is_last.clone(),
            "is_last": is_last,
            "traj_ids": torch.full((n,), start_id + k, dtype=torch.int64),
            "step": torch.arange(n),
        }, batch_size=[n]))
    return torch.cat(tds)


def test_uniform_slices_shape_and_no_crossing():
    rb = build_replay(capacity=200, batch_size=8, batch_length=10, fracs={"uniform": 1.0}, seed=0)
    rb.extend(episodes([30, 7, 50, 12]))
    for _ in range(20):
        batch, info = rb.sample(return_info=True)
        assert batch.shape == (80,)
        batch = batch.reshape(8, 10)
        ids = batch["traj_ids"]
        assert (ids == ids[:, :1]).all(), "a slice crossed an episode boundary"
        assert (batch["step"].diff(dim=1) == 1).all(), "slice is not consecutive in time"
        # the 7-step episode is shorter than T and must never appear
        assert not (ids == 1).any()
        assert not any(k in batch.keys(True) for k in [("next", "truncated"), "is_init"])
        starts = slice_starts(info["index"], 10)
        assert torch.equal(rb.storage[starts]["step"], batch["step"][:, 0])


def test_uniform_feedback_is_noop_and_metrics():
    rb = build_replay(capacity=100, batch_size=2, batch_length=5, fracs={"uniform": 1.0})
    rb.extend(episodes([40]))
    batch, info = rb.sample(return_info=True)
    replay_feedback(rb, info, TensorDict({"model_loss": torch.ones(2)}, [2]))
    assert replay_metrics(rb) == {"replay/size": 40.0}


@pytest.mark.parametrize("bad, msg", [
    ({"fracs": {"uniform": 0.5}}, "sum to 1"),
    ({"fracs": {"uniform": 0.5, "greedy": 0.5}}, "unknown sampler 'greedy'"),
    ({"fracs": {"uniform": 1.5, "curious": -0.5}}, ">= 0"),
    ({"batch_length": 0}, "batch_length"),
    ({"capacity": 4, "batch_length": 5}, "cannot exceed"),
])
def test_build_replay_bad_input(bad, msg):
    kwargs = dict(capacity=100, batch_size=2, batch_length=5, fracs={"uniform": 1.0})
    kwargs.update(bad)
    with pytest.raises(ValueError, match=msg):
        build_replay(**kwargs)
