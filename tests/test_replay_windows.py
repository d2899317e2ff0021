"""Window rules as sampled statistics: stream windows (DreamerV3) replay terminals at data rate.

A synthetic history with known episodes (lengths 5..120, some shorter than T) is written through
``build_replay`` with one stream (round-robin writer) and with three (StreamWriter), past the
wrap-around. Reference validity masks are computed here from what was written where, not from the
sampler: under the stream rule a start is valid iff its T records are written, lie in one ring and
are consecutive in that ring's write order; the episode rule adds one trajectory id. Every test
draws windows with a fixed seed and compares counts with exact expectations (chi-square, p > 1e-3).
"""

import pytest
import torch
from scipy.stats import chisquare
from tensordict import TensorDict

from imwm.errors import ConfigError
from imwm.replay import CuriousSampler, OnlineQueue, UniformSliceSampler
from imwm.training.build_replay import build_replay, replay_feedback, replay_metrics, slice_starts

T = 32
RING = 1200


class Env:
    """One env's records: episodes of 5..120 records (about 1/4 shorter than T), 70% terminal."""

    def __init__(self, env_id, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.env_id = env_id
        self.t = 0
        self.episode = -1
        self.left = 0
        self.lengths = []

    def chunk(self, n):
        rows = {k: [] for k in ("traj_ids", "is_first", "is_last", "is_terminal", "t")}
        for _ in range(n):
            first = self.left == 0
            if first:
                self.episode += 1
                self.left = int(torch.randint(5, 121, (), generator=self.g))
                self.lengths.append(self.left)
                self.terminal = bool(torch.rand((), generator=self.g) < 0.7)
            self.left -= 1
            rows["traj_ids"].append(self.env_id * 100_000 + self.episode)
            rows["is_first"].append(first)
            rows["is_last"].append(self.left == 0)
            rows["is_terminal"].append(self.left == 0 and self.terminal)
            rows["t"].append(self.t)
            self.t += 1
        td = TensorDict({k: torch.tensor(v) for k, v in rows.items()}, [n])
        for k in ("is_first", "is_last", "is_terminal"):
            td[k] = td[k].unsqueeze(-1)
        td["env"] = torch.full((n,), self.env_id)
        return td


class History:
    """Writes envs' chunks through a buffer and keeps, per storage row, what it holds."""

    def __init__(self, rb, num_envs, capacity, ring, seed=0):
        self.rb, self.ring, self.capacity = rb, ring, capacity
        self.envs = [Env(e, seed * 10 + e) for e in range(num_envs)]
        self.g = torch.Generator().manual_seed(seed + 1000)
        self.filled = torch.zeros(capacity, dtype=torch.bool)
        self.seq = torch.zeros(capacity, dtype=torch.long)  # write count of the row's ring
        self.ring_writes = [0] * (capacity // ring)
        self.writes = 0

    def step(self):
        """One collector batch: each env's chunk of 1..40 records, env after env."""
        n = int(torch.randint(1, 41, (), generator=self.g))
        td = torch.cat([env.chunk(n) for env in self.envs])
        td["w"] = torch.arange(self.writes, self.writes + len(td))
        self.writes += len(td)
        index = self.rb.extend(td).reshape(-1)
        for p in index.tolist():
            r = p // self.ring
            self.ring_writes[r] += 1
            self.seq[p] = self.ring_writes[r]
        self.filled[index] = True
        return index

    def fill(self, records_per_env):
        while self.envs[0].t < records_per_env:
            self.step()

    def episode_lengths(self):
        """traj id -> the episode's length (as drawn: the last one may still be running)."""
        return {e.env_id * 100_000 + k: n for e in self.envs for k, n in enumerate(e.lengths)}

    def column(self, key):
        return self.rb.storage._storage.get(key)[: self.capacity].reshape(self.capacity, -1)[:, 0]

    def reference_valid(self, window):
        """Valid starts by the definition, from what this history wrote where."""
        pos = (torch.arange(self.capacity).unsqueeze(1) + torch.arange(T)) % self.capacity
        ok = self.filled[pos].all(1)
        ok &= (pos // self.ring == pos[:, :1] // self.ring).all(1)    # one ring
        ok &= (self.seq[pos].diff(dim=1) == 1).all(1)                # consecutive in its writes
        if window == "episode":
            ids = self.column("traj_ids")[pos]
            ok &= (ids == ids[:, :1]).all(1)
        return ok


def build(window, num_envs, *, capacity=None, seed=0, **kw):
    capacity = capacity or RING * num_envs
    rb = build_replay(capacity=capacity, batch_size=64, batch_length=T, window=window,
                      num_streams=num_envs, seed=seed, **kw)
    return rb, History(rb, num_envs, capacity, capacity // num_envs, seed=seed)


def window_terminals(hist, flag="is_last"):
    """Number of `flag` records in the window of every start ``[N]``."""
    pos = (torch.arange(hist.capacity).unsqueeze(1) + torch.arange(T)) % hist.capacity
    return hist.column(flag)[pos].long().sum(1) * hist.filled.long()


def rows(hist, starts):
    """Storage rows ``[B * T]`` of the windows starting at ``starts``."""
    return ((starts.unsqueeze(1) + torch.arange(T)) % hist.capacity).reshape(-1)


def draw(rb, batches):
    starts = []
    for _ in range(batches):
        _, info = rb.sample(return_info=True)
        starts.append(slice_starts(info["index"], T))
    return torch.cat(starts)


def chi2_windows(starts, valid, x):
    """p-values of the windows' terminal counts (0, 1, 2+) and of their start bins, against draws
    uniform over the valid starts (windows are i.i.d. draws, so both are multinomial)."""
    k = starts.numel()
    cats = x.clamp(max=2)
    expect = torch.bincount(cats[valid], minlength=3).double() / int(valid.sum()) * k
    observed = torch.bincount(cats[starts], minlength=3).double()
    keep = expect >= 5
    observed[keep.nonzero()[-1]] += observed[~keep].sum()  # merge rare categories into the last
    p_terminals = chisquare(observed[keep].numpy(), expect[keep].numpy())[1]
    bins = torch.arange(valid.numel()) * 20 // valid.numel()
    expect_b = torch.bincount(bins[valid], minlength=20).double() / int(valid.sum()) * k
    observed_b = torch.bincount(bins[starts], minlength=20).double()
    assert observed_b[expect_b == 0].sum() == 0
    keep = expect_b > 0
    p_bins = chisquare(observed_b[keep].numpy(), expect_b[keep].numpy())[1]
    return p_terminals, p_bins


def fractions(hist, starts, valid, x):
    """(sampled, expected under uniform valid starts, data) fraction of terminal records."""
    data = float(hist.column("is_last")[hist.filled].double().mean())
    return float(x[starts].double().mean()) / T, float(x[valid].double().mean()) / T, data


# ----------------------------------------------------------------------------- (a) - (d)
@pytest.mark.parametrize("num_envs", [1, 3])
def test_stream_windows_replay_terminals_at_their_data_rate(num_envs):
    rb, hist = build("stream", num_envs, capacity=3000 if num_envs == 1 else None)
    assert isinstance(rb.sampler, UniformSliceSampler) and rb.sampler.window == "stream"
    hist.fill(4200 if num_envs == 1 else 2000)  # past the wrap-around of every ring
    assert hist.filled.all()
    rb.sampler._refresh(rb.storage)
    valid = hist.reference_valid("stream")
    assert torch.equal(rb.sampler._valid, valid)
    starts = draw(rb, 100)
    assert valid[starts].all()
    x = window_terminals(hist)
    p_terminals, p_bins = chi2_windows(starts, valid, x)
    assert p_terminals > 1e-3 and p_bins > 1e-3, (p_terminals, p_bins)
    sampled, expected, data = fractions(hist, starts, valid, x)
    # exact expectation = data rate up to the few records next to the heads and ring edges
    assert abs(expected - data) < 0.03 * data, (expected, data)
    assert abs(sampled - data) < 0.1 * data, (sampled, data)

    batch = rb.storage[rows(hist, starts)].reshape(-1, T)
    # (b) episodes shorter than T are replayed
    lengths = hist.episode_lengths()
    short = {i for i, n in lengths.items() if n < T}
    sampled_ids = batch["traj_ids"].reshape(-1).tolist()
    assert len(short & set(sampled_ids)) > 10
    in_data = [lengths[i] < T for i in hist.column("traj_ids")[hist.filled].tolist()]
    short_data = sum(in_data) / len(in_data)
    short_sampled = sum(lengths[i] < T for i in sampled_ids) / len(sampled_ids)
    assert abs(short_sampled - short_data) < 0.25 * short_data, (short_sampled, short_data)
    # (c) windows run across episode ends: is_first inside a window
    assert batch["is_first"][:, 1:].any()
    # (d) never across a write head, never between rings; an env changes only at an episode start
    w = batch["w"]
    assert (w.diff(dim=1) > 0).all(), "a window ran from the newest record into the oldest"
    ring = rows(hist, starts).reshape(-1, T) // hist.ring
    assert (ring == ring[:, :1]).all(), "a window mixed two streams"
    env_change = batch["env"].diff(dim=1) != 0
    assert not (env_change & ~batch["is_first"][:, 1:, 0]).any()
    t_step = batch["t"].diff(dim=1)
    assert ((t_step == 1) | batch["is_first"][:, 1:, 0]).all()


def test_head_is_never_crossed_after_many_wraps_one_stream():
    rb, hist = build("stream", 1, capacity=300)
    for k in range(120):
        hist.step()
        if not hist.reference_valid("stream").any():
            continue
        starts = draw(rb, 1)
        w = rb.storage[rows(hist, starts)]["w"].reshape(-1, T)
        assert (w.diff(dim=1) == 1).all(), f"batch {k}: a window crossed the write head"
        rb.sampler._refresh(rb.storage)
        assert torch.equal(rb.sampler._valid, hist.reference_valid("stream")), f"batch {k}"
    newest = int(hist.column("w").argmax())
    assert not rb.sampler._valid[(newest - torch.arange(T - 1)) % 300].any()
    assert rb.sampler._valid[(newest + 1) % 300]  # the oldest record starts a window


def test_incremental_mask_matches_reference_through_wraps_three_streams():
    rb, hist = build("stream", 3, capacity=3 * 150 + 2)  # two unused rows after the rings
    for k in range(60):
        hist.step()
        if k % 3 == 0 and hist.reference_valid("stream").any():
            draw(rb, 1)  # validity is refreshed lazily: mix sampled and unsampled writes
        rb.sampler._refresh(rb.storage)
        assert torch.equal(rb.sampler._valid, hist.reference_valid("stream")), f"batch {k}"
        assert rb.sampler._num_valid == int(rb.sampler._valid.sum())


# ----------------------------------------------------------------------------- (e)
@pytest.mark.parametrize("num_envs", [1, 3])
def test_episode_window_reproduces_the_old_rule(num_envs):
    from torchrl.data.replay_buffers.samplers import SliceSampler

    rb, hist = build("episode", num_envs, capacity=3000 if num_envs == 1 else None)
    hist.fill(4200 if num_envs == 1 else 2000)
    starts = draw(rb, 50)
    batch = rb.storage[rows(hist, starts)].reshape(-1, T)
    ids = batch["traj_ids"]
    assert (ids == ids[:, :1]).all() and not batch["is_first"][:, 1:].any()
    assert (batch["w"].diff(dim=1) > 0).all()
    lengths = hist.episode_lengths()
    assert all(lengths[i] >= T for i in set(ids[:, 0].tolist())), "a short episode was replayed"
    if num_envs == 1:
        assert type(rb.sampler) is SliceSampler  # TorchRL's, exactly as before the option
        return
    s = rb.sampler
    assert isinstance(s, UniformSliceSampler) and s.window == "episode"
    s._refresh(rb.storage)
    valid = hist.reference_valid("episode")
    assert torch.equal(s._valid, valid)
    x = window_terminals(hist)
    p_terminals, p_bins = chi2_windows(starts, valid, x)
    assert p_terminals > 1e-3 and p_bins > 1e-3
    sampled, expected, data = fractions(hist, starts, valid, x)
    assert expected < 0.5 * data  # the bias the stream rule removes: terminals end each window


def test_a_config_without_window_keeps_the_episode_rule():
    from torchrl.data.replay_buffers.samplers import SliceSampler

    rb = build_replay(capacity=100, batch_size=2, batch_length=5)
    assert type(rb.sampler) is SliceSampler
    cur = build_replay(capacity=100, batch_size=2, batch_length=5, num_streams=2,
                       fracs={"curious": 1.0, "uniform": 0.0})
    assert cur.sampler.window == "episode" and cur.sampler.num_streams == 2


# ----------------------------------------------------------------------------- priorities
@pytest.mark.parametrize("num_envs", [1, 3])
def test_curious_with_equal_priorities_is_uniform_over_stream_windows(num_envs):
    # c = 0 and alpha = 0: every priority is 1 before and after feedback
    rb, hist = build("stream", num_envs, capacity=3000 if num_envs == 1 else None,
                     fracs={"curious": 1.0, "uniform": 0.0},
                     curious={"c": 0.0, "alpha": 0.0, "initial": 1.0})
    assert isinstance(rb.sampler, CuriousSampler) and rb.sampler.window == "stream"
    hist.fill(4200 if num_envs == 1 else 2000)
    g = torch.Generator().manual_seed(3)
    starts = []
    for _ in range(100):
        _, info = rb.sample(return_info=True)
        starts.append(slice_starts(info["index"], T))
        replay_feedback(rb, info, TensorDict({"model_loss": torch.rand(64, generator=g) * 5}, [64]))
    starts = torch.cat(starts)
    valid = hist.reference_valid("stream")
    assert torch.equal(rb.sampler._valid, valid) and valid[starts].all()
    x = window_terminals(hist)
    p_terminals, p_bins = chi2_windows(starts, valid, x)
    assert p_terminals > 1e-3 and p_bins > 1e-3, (p_terminals, p_bins)
    sampled, _, data = fractions(hist, starts, valid, x)
    assert abs(sampled - data) < 0.1 * data


def test_every_sampler_of_a_mixture_gets_the_window_rule():
    rb, hist = build("stream", 3, fracs={"explore": 0.4, "exploit": 0.4, "uniform": 0.2},
                     trend={"enable": True})
    leaves = [rb.sampler.children["uniform"], *rb.sampler.trend.children.values()]
    assert {(s.window, s.num_streams) for s in leaves} == {("stream", 3)}
    hist.fill(300)
    draw(rb, 2)
    for s in leaves:
        s._refresh(rb.storage)
        assert torch.equal(s._valid, hist.reference_valid("stream"))


# ----------------------------------------------------------------------------- state
def test_state_saved_under_the_episode_rule_is_revalidated_under_the_stream_rule():
    old, hist = build("episode", 3)
    hist.fill(500)
    draw(old, 1)
    state = old.sampler.state_dict()
    state["hyper"].pop("window")  # as saved before the option existed
    state["hyper"].pop("num_streams")
    new = build_replay(capacity=hist.capacity, batch_size=64, batch_length=T, window="stream",
                       num_streams=3, seed=0)
    new.storage.set(torch.arange(hist.capacity), old.storage[:])
    new.sampler.load_state_dict(state)
    assert new.sampler._full_refresh
    draw(new, 1)
    assert torch.equal(new.sampler._valid, hist.reference_valid("stream"))
    assert new.sampler.state_dict()["hyper"]["window"] == "stream"
    again = UniformSliceSampler(hist.capacity, slice_len=T, window="stream", num_streams=3)
    again.load_state_dict(new.sampler.state_dict())
    assert not again._full_refresh and torch.equal(again._valid, new.sampler._valid)


def test_bad_window_options_name_the_key():
    with pytest.raises(ConfigError, match="replay.window: must be 'stream'"):
        build_replay(capacity=100, batch_size=2, batch_length=5, window="both")
    with pytest.raises(ConfigError, match="replay.online: must be true or false"):
        build_replay(capacity=100, batch_size=2, batch_length=5, online="yes")
    with pytest.raises(ValueError, match="window must be 'stream' or 'episode', got 'steam'"):
        UniformSliceSampler(100, slice_len=5, window="steam")
    with pytest.raises(ValueError, match="num_streams=30 splits max_capacity=100"):
        UniformSliceSampler(100, slice_len=5, num_streams=30)
    # the stream rule reads no trajectory key
    UniformSliceSampler(100, slice_len=5, window="stream", traj_key=None)
    # TorchRL's SliceSampler (episode rule, one env) saved {}: say how to resume such a replay
    with pytest.raises(ValueError, match="resumes with replay.window=episode"):
        UniformSliceSampler(100, slice_len=5, window="stream").load_state_dict({})


# ----------------------------------------------------------------------------- online
@pytest.mark.parametrize("num_envs", [1, 3])
def test_online_queue_replays_every_fresh_window_once_first(num_envs):
    rb, hist = build("stream", num_envs, capacity=600 * num_envs, online=True)
    assert isinstance(rb.sampler, OnlineQueue)
    seen = torch.zeros(hist.capacity * 10, dtype=torch.long)  # by write count w
    fifo_last = -1
    for k in range(80):
        hist.step()
        if not hist.reference_valid("stream").any():
            continue
        queued = len(rb.sampler._queue)
        _, info = rb.sample(return_info=True)
        starts = slice_starts(info["index"], T)
        n_online = rb.sampler.last_online
        # with several rings the tile that crosses a ring edge is no valid window and is dropped
        assert n_online == min(queued, 64) if num_envs == 1 else n_online <= min(queued, 64)
        w = rb.storage[rows(hist, starts[:n_online])]["w"].reshape(-1, T)
        assert (w.diff(dim=1) == 1).all() if num_envs == 1 else (w.diff(dim=1) > 0).all()
        if n_online:  # in the order the windows were completed, never twice
            done = torch.cat([torch.tensor([fifo_last]), w[:, -1]])
            assert (done.diff() > 0).all()
            fifo_last = int(w[-1, -1])
        seen[w.reshape(-1)] += 1
    assert seen.max() == 1, "a record was replayed online twice"
    # every record is trained on online, except the last windows that are not complete yet
    # (and, with several rings, the windows that would cross a ring edge)
    missed = int((seen[: hist.writes] == 0).sum())
    assert missed <= num_envs * (T - 1) + (0 if num_envs == 1 else 3 * hist.writes // 600 * T)
    m = replay_metrics(rb)
    assert "replay/online_queue" in m and "replay/online_frac" in m and "replay/valid_starts" in m


def test_online_queue_drops_overwritten_windows_and_round_trips():
    rb, hist = build("stream", 1, capacity=200, online=True)
    for _ in range(40):  # about 800 records with no sampling: the ring wrapped four times
        hist.step()
    starts = draw(rb, 1)
    w = rb.storage[rows(hist, starts)]["w"].reshape(-1, T)
    assert (w.diff(dim=1) == 1).all()
    online = w[: rb.sampler.last_online, 0]
    assert rb.sampler.last_online > 0 and (online >= hist.writes - 200).all()  # only intact ones
    hist.step()
    state = rb.sampler.state_dict()
    twin = build_replay(capacity=200, batch_size=64, batch_length=T, window="stream", seed=0,
                        online=True)
    twin.storage.set(torch.arange(200), rb.storage[:])
    twin.sampler.load_state_dict(state)
    assert list(twin.sampler._queue) == list(rb.sampler._queue)
    g = torch.Generator().manual_seed(9).get_state()
    rb._rng.set_state(g)
    twin._rng.set_state(g)
    assert torch.equal(draw(rb, 2), draw(twin, 2))


def test_online_queue_with_a_prioritised_mixture_and_snapshot(tmp_path):
    from imwm.training.snapshot import load_replay, save_replay

    kw = dict(fracs={"explore": 0.4, "exploit": 0.4, "uniform": 0.2}, trend={"enable": True},
              online=True)
    rb, hist = build("stream", 3, **kw)
    assert isinstance(rb.sampler, OnlineQueue) and rb.sampler.trend is not None
    for _ in range(30):
        hist.step()
        if not hist.reference_valid("stream").any():
            continue
        _, info = rb.sample(return_info=True)
        signals = TensorDict({"kl": torch.rand(64), "model_loss": torch.rand(64)}, [64])
        replay_feedback(rb, info, signals, reward=torch.rand(3))
    save_replay(rb, tmp_path / "replay", tag="t")
    twin = build_replay(capacity=hist.capacity, batch_size=64, batch_length=T, window="stream",
                        num_streams=3, seed=5, **kw)
    load_replay(twin, tmp_path / "replay")
    assert list(twin.sampler._queue) == list(rb.sampler._queue)
    assert twin.sampler.trend.gate == rb.sampler.trend.gate
    assert torch.equal(draw(rb, 2), draw(twin, 2))
    with pytest.raises(ValueError, match="share one"):
        OnlineQueue(type(rb.sampler.inner)({
            "a": UniformSliceSampler(100, slice_len=4, window="stream"),
            "b": UniformSliceSampler(100, slice_len=4, window="episode")}, {"a": 0.5, "b": 0.5}))
