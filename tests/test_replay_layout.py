"""Replay samplers on records made by the loop's DreamerRecordLayout (the real write path)."""

import pytest
import torch
from tensordict import TensorDict

from imwm.training.build_replay import build_replay, replay_feedback, slice_starts
from imwm.training.layout import DreamerRecordLayout


class FakeCollector:
    """Collector-format batches [num_envs, steps] with episodes of random length."""

    def __init__(self, num_envs, seed=0):
        self.g = torch.Generator().manual_seed(seed)
        self.n = num_envs
        self.left = torch.zeros(num_envs, dtype=torch.long)  # 0: next step starts an episode
        self.t = torch.zeros(num_envs)

    def batch(self, steps):
        is_init = torch.zeros(self.n, steps, 1, dtype=torch.bool)
        done = torch.zeros(self.n, steps, 1, dtype=torch.bool)
        obs = torch.zeros(self.n, steps, 2)
        for e in range(self.n):
            for s in range(steps):
                if self.left[e] == 0:
                    is_init[e, s] = True
                    self.left[e] = int(torch.randint(5, 40, (), generator=self.g))
                obs[e, s, 0] = self.t[e]
                obs[e, s, 1] = e
                self.t[e] += 1
                self.left[e] -= 1
                done[e, s] = self.left[e] == 0
        nxt = obs.clone()
        nxt[..., 0] += 1
        return TensorDict({
            "observation": obs, "action": torch.ones(self.n, steps, 2), "is_init": is_init,
            "next": {"observation": nxt, "reward": torch.rand(self.n, steps, 1),
                     "terminated": done.clone(), "done": done},
        }, [self.n, steps])


@pytest.mark.parametrize("replay", [
    {"fracs": {"uniform": 1.0}},
    {"fracs": {"curious": 1.0, "uniform": 0.0}},
    {"fracs": {"explore": 0.5, "exploit": 0.5, "uniform": 0.0}, "trend": {"enable": True}},
])
def test_slices_of_layout_records_follow_the_dreamer_contract(replay):
    T, B = 12, 6
    rb = build_replay(capacity=400, batch_size=B, batch_length=T, seed=0, **replay)
    layout, env = DreamerRecordLayout(1), FakeCollector(1)
    for k in range(60):
        rb.extend(layout(env.batch(16)))
        if k < 2:
            continue
        batch, info = rb.sample(return_info=True)
        batch = batch.reshape(B, T)
        assert (batch["traj_ids"] == batch["traj_ids"][:, :1]).all()
        assert not batch["is_first"][:, 1:].any(), "an episode start inside a slice"
        assert not batch["is_last"][:, :-1].any(), "an episode end inside a slice"
        # one env: time runs on by one inside a slice (the first record repeats o_t of is_first)
        t = batch["observation"][..., 0]
        steps = t.diff(dim=1)
        assert ((steps == 1) | ((steps == 0) & batch["is_first"][:, :-1, 0])).all()
        signals = TensorDict({"model_loss": torch.rand(B), "kl": torch.rand(B),
                              "entropy": torch.rand(B)}, [B])
        replay_feedback(rb, info, signals, reward=batch["reward"])
        assert slice_starts(info["index"], T).shape == (B,)


def test_two_envs_with_short_chunks_fail_loudly():
    # Known limitation: the layout writes each env's chunk of a batch contiguously, so with
    # several envs an episode is cut at every batch; slices longer than a chunk do not exist.
    T = 12
    rb = build_replay(capacity=400, batch_size=2, batch_length=T,
                      fracs={"curious": 1.0, "uniform": 0.0}, seed=0)
    layout, env = DreamerRecordLayout(2), FakeCollector(2)
    for _ in range(10):
        rb.extend(layout(env.batch(4)))  # 4 steps per env per batch < T
    with pytest.raises(RuntimeError, match="each env's chunk must hold at least slice_len"):
        rb.sample()


@pytest.mark.parametrize("fracs", [
    {"uniform": 1.0},
    {"curious": 0.5, "uniform": 0.5},
])
def test_stream_writer_makes_multi_env_slices_work(fracs):
    T, B, n_envs = 12, 6, 3
    rb = build_replay(capacity=600, batch_size=B, batch_length=T, fracs=fracs, seed=0,
                      num_streams=n_envs)
    layout, env = DreamerRecordLayout(n_envs), FakeCollector(n_envs, seed=1)
    for k in range(80):  # 4 steps per env per batch: far shorter than T; rings wrap (200 each)
        rb.extend(layout(env.batch(4)))
        if k < 6:
            continue
        batch, info = rb.sample(return_info=True)
        batch = batch.reshape(B, T)
        assert (batch["traj_ids"] == batch["traj_ids"][:, :1]).all()
        assert not batch["is_first"][:, 1:].any() and not batch["is_last"][:, :-1].any()
        env_id = batch["observation"][..., 1]
        assert (env_id == env_id[:, :1]).all(), "a slice mixed two envs"
        steps = batch["observation"][..., 0].diff(dim=1)
        assert ((steps == 1) | ((steps == 0) & batch["is_first"][:, :-1, 0])).all()
        signals = TensorDict({"model_loss": torch.rand(B), "kl": torch.rand(B),
                              "entropy": torch.rand(B)}, [B])
        replay_feedback(rb, info, signals)
    sampler = rb.sampler if not hasattr(rb.sampler, "children") else rb.sampler.children["uniform"]
    # most records can start a slice: only the last T-1 of each episode (and ring seams) cannot
    assert sampler._num_valid > 0.4 * len(rb)


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("fracs", [{"uniform": 1.0}, {"curious": 0.5, "uniform": 0.5}])
def test_stream_windows_of_layout_records_run_across_episodes_within_one_env(n_envs, fracs):
    T, B = 12, 6
    rb = build_replay(capacity=200 * n_envs, batch_size=B, batch_length=T, fracs=fracs, seed=0,
                      num_streams=n_envs, window="stream")
    layout, env = DreamerRecordLayout(n_envs), FakeCollector(n_envs, seed=2)
    crossed = 0
    for k in range(80):  # rings of 200 wrap
        rb.extend(layout(env.batch(4)))
        if k < 4:
            continue
        batch, info = rb.sample(return_info=True)
        batch = batch.reshape(B, T)
        first = batch["is_first"][:, 1:, 0]
        crossed += int(first.sum())
        # a new episode inside a window only right after the previous one's last record
        assert (batch["is_last"][:, :-1, 0] == first).all()
        # one env per episode; a ring may pass to another env only at an episode start
        env_id = batch["observation"][..., 1]
        assert not ((env_id.diff(dim=1) != 0) & ~first).any(), "a window mixed two envs"
        # time runs on by one inside an episode
        steps = batch["observation"][..., 0].diff(dim=1)
        assert ((steps == 1) | first).all()
        replay_feedback(rb, info, TensorDict({"model_loss": torch.rand(B)}, [B]))
    assert crossed > 0
