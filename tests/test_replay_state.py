"""Sampler state: state_dict / load_state_dict, TorchRL dumps / loads, checkpoint-safe contents."""

import io
import math

import torch
from tensordict import TensorDict

from imwm.training.build_replay import build_replay, replay_feedback

T, B = 4, 6


def _records(n, start=0):
    ids = (torch.arange(start, start + n) // 17).long()
    return TensorDict({"traj_ids": ids, "t": torch.arange(start, start + n),
                       "reward": torch.rand(n, 1)}, [n])


def _train_a_bit(rb, steps=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    written = 0
    for _ in range(steps):
        rb.extend(_records(9, written))
        written += 9
        if written < 40:
            continue
        _, info = rb.sample(return_info=True)
        signals = TensorDict({"model_loss": torch.rand(B, generator=g),
                              "kl": torch.rand(B, generator=g),
                              "entropy": torch.rand(B, generator=g)}, [B])
        replay_feedback(rb, info, signals, reward=torch.rand(3, generator=g) * written)
    return written


def _build(kind, seed=0):
    common = dict(capacity=80, batch_size=B, batch_length=T, seed=seed)
    if kind == "curious":
        return build_replay(fracs={"curious": 1.0, "uniform": 0.0},
                            curious={"c": 10.0, "entropy_lambda": 0.1}, **common)
    return build_replay(fracs={"explore": 0.4, "exploit": 0.4, "uniform": 0.2},
                        explore_exploit={"eps": 1e-6}, trend={"enable": True, "k": 5.0}, **common)


def _assert_same_sampler_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()

    def walk(x, y, path=""):
        if isinstance(x, dict):
            assert set(x) == set(y), path
            for k in x:
                walk(x[k], y[k], f"{path}/{k}")
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), path
        else:
            assert x == y, path
    walk(sa, sb)


def test_state_dict_round_trip_restores_priorities_gate_and_sampling():
    for kind in ("curious", "mixture"):
        rb = _build(kind)
        _train_a_bit(rb)
        state = rb.sampler.state_dict()
        # checkpoint contract: plain containers of tensors/numbers, loadable with weights_only
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        rb2 = _build(kind)
        rb2.extend(rb.storage[:])  # same records, fresh sampler state ...
        rb2.sampler.load_state_dict(state)  # ... replaced by the saved one
        _assert_same_sampler_state(rb.sampler, rb2.sampler)
        if kind == "mixture":
            assert rb2.sampler.trend.gate == rb.sampler.trend.gate != 0.5
        # identical draws from identical generators
        g_state = torch.Generator().manual_seed(5).get_state()
        rb._rng.set_state(g_state)
        rb2._rng.set_state(g_state)
        for _ in range(3):
            _, i1 = rb.sample(return_info=True)
            _, i2 = rb2.sample(return_info=True)
            assert torch.equal(i1["index"][0], i2["index"][0])


def test_dumps_loads_round_trip(tmp_path):
    for kind in ("curious", "mixture"):
        rb = _build(kind)
        _train_a_bit(rb, seed=1)
        rb.dumps(tmp_path / kind)
        rb2 = _build(kind, seed=123)
        rb2.loads(tmp_path / kind)
        assert len(rb2) == len(rb)
        _assert_same_sampler_state(rb.sampler, rb2.sampler)
        _, i1 = rb.sample(return_info=True)
        _, i2 = rb2.sample(return_info=True)  # loads() restored the buffer's generator too
        assert torch.equal(i1["index"][0], i2["index"][0])


def test_loaded_curious_priorities_match_formula():
    rb = _build("curious")
    _train_a_bit(rb, seed=2)
    s = rb.sampler
    fed = s._has_signal.nonzero().reshape(-1)
    assert fed.numel() > 0
    expect = 10.0 * 0.7 ** s._visits[fed].double() + (s._signal[fed].double() + 0.01) ** 0.7
    assert torch.allclose(s.priorities(fed), expect)
    never = (~s._has_signal & s._filled).nonzero().reshape(-1)
    assert torch.isinf(s.priorities(never)).all()
    assert not math.isnan(float(s._tree.finite_total()))
