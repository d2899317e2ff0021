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
    ({"fracs": {"uniform": 0.5, "greedy": 0.5}}, "replay.fracs.greedy: unknown sampler"),
    ({"fracs": {"uniform": 1.5, "curious": -0.5}}, ">= 0"),
    ({"batch_length": 0}, "batch_length"),
    ({"capacity": 4, "batch_length": 5}, "cannot exceed"),
])
def test_build_replay_bad_input(bad, msg):
    kwargs = dict(capacity=100, batch_size=2, batch_length=5, fracs={"uniform": 1.0})
    kwargs.update(bad)
    with pytest.raises(ValueError, match=msg):
        build_replay(**kwargs)


def _cfg(name, **override):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(f"configs/replay/{name}.yaml")
    for k, v in override.items():
        cfg[k] = v
    return cfg


def test_configs_build_one_to_one_with_spec_defaults():
    from imwm.replay import CuriousSampler, MixtureSampler
    from torchrl.data.replay_buffers.samplers import SliceSampler

    from imwm.replay import UniformSliceSampler

    rb = build_replay(**_cfg("uniform", capacity=100, batch_length=5))
    # the configs' default window rule is DreamerV3's stream windows: imwm's uniform sampler
    assert isinstance(rb.sampler, UniformSliceSampler) and rb.sampler.window == "stream"
    old = build_replay(**_cfg("uniform", capacity=100, batch_length=5, window="episode"))
    assert isinstance(old.sampler, SliceSampler)  # the rule before, exactly as before
    cur = build_replay(**_cfg("curious", capacity=100, batch_length=5))
    s = cur.sampler
    assert isinstance(s, CuriousSampler) and s.window == "stream"
    assert (s.c, s.beta, s.alpha, s.epsilon, s.initial, s.entropy_lambda) == (
        1e4, 0.7, 0.7, 0.01, float("inf"), 0.0)
    ee = build_replay(**_cfg("explore_exploit", capacity=100, batch_length=5))
    assert isinstance(ee.sampler, MixtureSampler) and ee.sampler.trend is not None
    tr = ee.sampler.trend
    assert (tr.fast_rate, tr.slow_rate, tr.k, tr.eps, tr.gate_min, tr.gate_max, tr.gate) == (
        0.1, 0.01, 5.0, 1e-6, 0.05, 0.95, 0.5)
    assert list(ee.sampler.children) == ["trend"]  # uniform: 0.0 dropped


def test_curious_feedback_reaches_slice_starts_and_metrics():
    rb = build_replay(**_cfg("curious", capacity=300, batch_length=8, batch_size=4), seed=0)
    rb.extend(episodes([60, 90]))
    batch, info = rb.sample(return_info=True)
    starts = slice_starts(info["index"], 8)
    assert torch.isinf(rb.sampler.priorities(starts)).all()
    loss = torch.tensor([0.5, 1.0, 2.0, 4.0])
    replay_feedback(rb, info, TensorDict({"model_loss": loss, "kl": torch.ones(4),
                                          "entropy": torch.ones(4)}, [4]))
    got = rb.sampler.priorities(starts)
    expect = 1e4 * 0.7 ** rb.sampler._visits[starts].double() + (loss.double() + 0.01) ** 0.7
    for i in range(4):  # a start drawn twice keeps one of its losses
        same = (starts == starts[i]).nonzero().reshape(-1)
        assert any(torch.isclose(got[i], expect[j]) for j in same.tolist())
    m = replay_metrics(rb)
    for key in ("replay/size", "replay/mean_visits", "replay/inf_frac", "replay/priority_entropy",
                "replay/valid_starts"):
        assert key in m
    assert m["replay/valid_starts"] == 150 - 7  # stream windows run across the episode end
    assert 0 < m["replay/inf_frac"] < 1


def test_trend_gate_fed_by_collected_rewards_and_warns_without():
    rb = build_replay(**_cfg("explore_exploit", capacity=300, batch_length=8, batch_size=4),
                      seed=0)
    rb.extend(episodes([100, 100]))
    signals = TensorDict({"model_loss": torch.ones(4), "kl": torch.rand(4),
                          "entropy": torch.ones(4)}, [4])
    for t in range(30):
        _, info = rb.sample(return_info=True)
        replay_feedback(rb, info, signals, reward=torch.full((5,), 0.01 * t ** 2))
    assert replay_metrics(rb)["replay/gate"] == 0.95
    rb2 = build_replay(**_cfg("explore_exploit", capacity=300, batch_length=8, batch_size=4))
    rb2.extend(episodes([100]))
    _, info = rb2.sample(return_info=True)
    with pytest.warns(UserWarning, match="no `reward` was passed"):
        replay_feedback(rb2, info, signals)


@pytest.mark.parametrize("name", ["uniform", "curious", "explore_exploit"])
def test_no_slice_crosses_the_write_head_after_wrapping(name):
    # one episode id across the wrap: only the write-head rule keeps slices contiguous in time
    rb = build_replay(**_cfg(name, capacity=64, batch_length=10, batch_size=4), seed=0)
    for k in range(20):
        chunk = episodes([9], start_id=0)
        chunk["step"] = torch.arange(9 * k, 9 * k + 9)
        chunk["is_first"][:] = False
        rb.extend(chunk)
        if k < 2:
            continue
        batch = rb.sample().reshape(4, 10)
        assert (batch["step"].diff(dim=1) == 1).all(), f"{name}: slice crossed the write head"
