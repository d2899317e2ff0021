"""Collection over several worker processes (``collector_workers``) and over TorchRL's distributed
backend (``collector=distributed``), through the real entry point.

For each of ``collector=sync`` (``MultiSyncCollector``), ``collector=async``
(``MultiAsyncCollector``) and ``collector=distributed`` (``DistributedCollector``, ``gloo`` on
localhost) with 2 envs in 2 workers: the train ratio's number of updates exactly, every replay
stream holding its own env's records only and in time order; a resume that continues (one
process, then sync workers, async workers, distributed ranks); pushed weights reaching every worker; a
``collector_workers`` that does not split ``num_envs`` refused in one line. Each end-to-end run is
a short ``preset=debug`` run (15-30 s on a shared core).
"""
import functools

import pytest
import torch
from tensordict import TensorDict

from imwm.configs import compose_config
from imwm.envs import make_env
from imwm.errors import ConfigError
from imwm.training.build_replay import build_replay
from imwm.training.checkpoint import RunCheckpoint
from imwm.training.collectors import batch_envs, make_collector, worker_env
from imwm.training.config import _check_collector, validate_config
from imwm.training.identity import config_hash, identity_changes
from imwm.training.layout import DreamerRecordLayout

from test_train_script import train

TAU = 0.02  # CartPole-v1's Euler step: x' = x + TAU * x_dot, theta' = theta + TAU * theta_dot
WORKERS = ("num_envs=2", "collector_workers=2")


def stream_records(run_dir) -> list[TensorDict]:
    """The records of each replay stream of a finished run, in write order."""
    store = RunCheckpoint(run_dir)
    saved = torch.load(store.latest, weights_only=True)
    rb = build_replay(**saved["config"]["replay"], num_streams=saved["config"]["num_envs"], seed=0)
    store.restore(rb)
    writer, storage = rb._writer, rb._storage
    size = storage.max_size // writer.num_streams
    # every stream is shorter than its ring here (capacity 10000): its records are its first rows
    return [storage[s * size: s * size + writer._offsets[s]] for s in range(writer.num_streams)]


def check_streams(run_dir, seed: int | None = 0) -> None:
    """Stream ``s`` holds env ``s``'s records only, in time order: its first record is env ``s``'s
    first reset (seeded ``seed + s``; not checked with ``seed=None``), its episodes never appear in
    another stream, each starts with ``is_first``, and consecutive records of one episode follow
    CartPole's own dynamics."""
    streams = stream_records(run_dir)
    ids = [set(r["traj_ids"].tolist()) for r in streams]
    assert all(len(r) > 50 for r in streams), [len(r) for r in streams]
    assert not ids[0] & ids[1], "an episode was written to two streams"
    for s, rec in enumerate(streams):
        if seed is not None:
            first = make_env(name="cartpole", num_envs=1, seed=seed + s).reset()["observation"][0]
            assert torch.equal(rec["observation"][0], first), f"stream {s} does not start with env {s}"
        traj, obs, is_first = rec["traj_ids"], rec["observation"], rec["is_first"].reshape(-1)
        assert (traj[1:] >= traj[:-1]).all(), f"stream {s}: episodes out of order"
        starts = torch.cat([torch.tensor([True]), traj[1:] != traj[:-1]])
        assert torch.equal(is_first, starts), f"stream {s}: is_first is not at each episode start"
        same = ~starts[1:]
        step = obs[1:] - obs[:-1] - TAU * obs[:-1][:, [1, 1, 3, 3]] * torch.tensor([1.0, 0.0, 1.0, 0.0])
        gap = step[:, [0, 2]].abs().amax(-1)[same]
        assert gap.max() < 1e-4, f"stream {s}: consecutive records of an episode are not consecutive steps"


def counters(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["counters"]


@pytest.mark.parametrize("collector", ["sync", "async", "distributed"])
def test_workers_keep_the_train_ratio_and_the_streams(tmp_path, collector):
    first = train(tmp_path, "total_env_steps=200", f"collector={collector}", *WORKERS)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    # prefill 100, then 0.5 updates per env step (train_ratio 16 / batch 4x8): as with one worker
    assert counters(run)["env_steps"] == 200 and counters(run)["updates"] == 50
    check_streams(run)


def test_a_run_resumes_with_other_collectors(tmp_path):
    """collector and collector_workers are execution keys: resume=auto continues the run, here from
    one process to two sync workers, then two distributed ranks (a resumed run has no prefill left,
    which each collector is told in its own way; an async run that resumes is in
    test_train_async)."""
    first = train(tmp_path, "total_env_steps=200", "num_envs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    for steps, collector in ((300, "sync"), (400, "distributed")):
        resumed = train(tmp_path, f"total_env_steps={steps}", f"collector={collector}", *WORKERS)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"at env step {steps - 100}" in resumed.stdout
        assert counters(run)["env_steps"] == steps and counters(run)["updates"] == (steps - 100) // 2
        check_streams(run, seed=None)  # (one process seeds its 2 cartpole envs 0 and a derived seed)


def test_async_workers_lose_no_batch_behind_a_slow_learner():
    """A learner that holds each batch for longer than TorchRL's 1 s queue timeout: every env's
    next batch still starts where its previous one ended (TorchRL's own ``MultiAsyncCollector``
    dropped 7 of 8 such batches in one run)."""
    import time

    plain = validate_config(compose_config(["preset=debug", "collector=async", *WORKERS]))
    collector = make_collector(plain, env=None, policy=lambda n: None, env_seed=0)
    last: dict[int, torch.Tensor] = {}
    try:
        for i, batch in enumerate(collector):
            rows, first = batch_envs(batch)
            if first in last and not rows["is_init"][0, 0]:
                assert torch.equal(rows["observation"][0, 0], last[first]), f"batch {i}: env {first} skipped steps"
            last[first] = rows["next", "observation"][0, -1]
            time.sleep(2.0)  # twice TorchRL's 1 s put timeout, so the old one-slot queue drops
            if i == 4:
                break
    finally:
        collector.shutdown()
    assert sorted(last) == [0, 1]


def forced_policy_share(plain: dict, after: int = 3, most: int = 40) -> dict[int, float]:
    """Share of action 0 in each env's last batch, after the actor was forced to action 0 from
    the second batch on, the weights were pushed after every batch, and every env delivered
    ``after`` batches since the first push (at most ``most`` batches in all)."""
    from imwm.training.build_model import build_agent

    env = worker_env(plain["env"], first=0, num_envs=plain["num_envs"], seed=0)
    # no uniform mix, so the forced policy below is deterministic
    agent = build_agent(compose_config(["preset=debug", "agent.actor_unimix=0"]), obs_shape=(4,),
                        action_dim=2)
    collector = make_collector(plain, env=env, env_seed=0,
                               policy=lambda n: agent.policy(n, action_dtype=env.action_spec.dtype))
    last: dict[int, float] = {}
    since_push: dict[int, int] = {}
    try:
        for i, batch in enumerate(collector):
            rows, first = batch_envs(batch)
            for row in range(rows.shape[0]):
                last[first + row] = rows[row]["action"][..., 0].float().mean().item()
                if i > 0:
                    since_push[first + row] = since_push.get(first + row, 0) + 1
            if i == 0:
                out = agent.actor.net.net[-1]
                with torch.no_grad():  # a policy that always pushes left
                    out.weight.zero_()
                    out.bias.copy_(torch.tensor([50.0, -50.0]))
            collector.update_policy_weights_()
            if (len(since_push) == plain["num_envs"] and min(since_push.values()) >= after) or i == most:
                break
    finally:
        collector.shutdown()
        env.close()
    assert len(since_push) == plain["num_envs"] and min(since_push.values()) >= after, since_push
    return last


@pytest.mark.parametrize("collector", ["sync", "async", "distributed"])
def test_pushed_weights_reach_every_worker(collector):
    plain = validate_config(compose_config(["preset=debug", f"collector={collector}", *WORKERS]))
    shares = forced_policy_share(plain)
    assert sorted(shares) == [0, 1]  # both workers' envs delivered batches
    # an async worker may hold one finished batch from before the push and be halfway through the
    # next when it lands (shared-memory weights change mid-batch), so each env's third batch after
    # the push is the first surely collected after it. That batch is 10 steps of a policy that picks
    # action 0 with p = 1 - e^-100, so every step is action 0; an unpushed policy (p ~ 0.5) passes
    # this for both workers with ~1e-6.
    assert min(shares.values()) == 1.0, shares


@pytest.mark.parametrize("collector, workers, pushes", [("sync", 1, 0), ("sync", 2, 3), ("async", 2, 3)])
def test_the_loop_pushes_weights_after_every_batch(tmp_path, monkeypatch, collector, workers, pushes):
    """In-process ``run``: one push per batch (3 batches of 20 env steps) wherever the policy acts
    in other processes, none where it acts with the learner's own modules."""
    import imwm.training.loop as loop

    counted = []

    def counting(*args, **kwargs):
        made = make_collector(*args, **kwargs)
        push = made.update_policy_weights_
        made.update_policy_weights_ = lambda *a, **k: (counted.append(1), push(*a, **k))[1]
        return made

    monkeypatch.setattr(loop, "make_collector", counting)
    cfg = compose_config(["preset=debug", "logger=csv", f"run_dir={tmp_path / 'run'}", "total_env_steps=60",
                          "prefill=40", "eval_every=0", "checkpoint_every=0", "num_envs=2",
                          f"collector={collector}", f"collector_workers={workers}"])
    summary = loop.run(cfg)
    assert summary["env_steps"] == 60 and summary["updates"] == 10
    assert len(counted) == pushes


def test_bad_collector_workers_is_one_line():
    for value, what in [(0, "must be an integer >= 1"), (3, r"must divide num_envs \(2\)")]:
        with pytest.raises(ConfigError, match=f"^collector_workers: {what}"):
            validate_config(compose_config(["preset=debug", "num_envs=2", f"collector_workers={value}"]))
    with pytest.raises(ConfigError, match=r"collector: must be one of \['sync', 'async', 'distributed'\]"):
        validate_config(compose_config(["preset=debug", "collector=threads"]))
    plain = validate_config(compose_config(["preset=debug", "collector=distributed"]))
    _check_collector(plain, environ={})
    with pytest.raises(ConfigError, match="^collector: cannot run under torchrun"):
        _check_collector(plain, environ={"WORLD_SIZE": "2"})


def test_bad_collector_workers_through_the_entry_point(tmp_path):
    result = train(tmp_path, *WORKERS[:1], "collector_workers=3")
    assert result.returncode != 0
    assert "collector_workers: must divide num_envs (2)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_collector_keys_keep_the_run_identity():
    base = validate_config(compose_config(["preset=debug", "num_envs=2"]))
    for overrides in (["collector=async"], ["collector_workers=2"], ["collector=distributed", "collector_workers=2"]):
        other = validate_config(compose_config(["preset=debug", "num_envs=2", *overrides]))
        assert config_hash(other) == config_hash(base), overrides
        assert identity_changes(base, other) == [], overrides
    assert validate_config(compose_config(["preset=debug"]))["collector_workers"] == 1


def test_layout_and_writer_keep_env_i_in_stream_i():
    """One worker's batch converts as its own envs and lands in their streams, in any batch order."""
    from imwm.replay import StreamWriter
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    def batch(envs, t0, n=3, init=False):
        obs = torch.tensor([[100.0 * e + t0 + t for t in range(n)] for e in envs]).unsqueeze(-1)
        flags = torch.zeros(len(envs), n, 1, dtype=torch.bool)
        is_init = flags.clone()
        is_init[:, 0] = init
        return TensorDict({"observation": obs, "action": torch.zeros(len(envs), n, 2), "is_init": is_init,
                           "next": {"observation": obs + 1, "reward": torch.zeros(len(envs), n, 1),
                                    "terminated": flags, "done": flags}}, [len(envs), n])

    layout = DreamerRecordLayout(num_envs=4, stream_key="stream")
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(40), writer=StreamWriter(4))
    for envs, t0, init in [([2, 3], 0, True), ([0, 1], 0, True), ([2, 3], 3, False), ([0, 1], 3, False)]:
        rb.extend(layout(batch(envs, t0, init=init), first_env=envs[0]))
    assert "stream" not in rb[:].keys()
    ids = []
    for s in range(4):  # ring s: rows 10s .. 10s+6 hold env s's frames 0..6 in order, one episode
        ring = rb[10 * s: 10 * s + 7]
        assert ring["observation"].reshape(-1).tolist() == [100.0 * s + t for t in range(7)]
        ids.append(set(ring["traj_ids"].tolist()))
    assert [len(i) for i in ids] == [1, 1, 1, 1] and set.union(*ids) == {0, 1, 2, 3}
    assert layout.state_dict() == {"next_traj_id": 4}
    with pytest.raises(ValueError, match=r"envs \[1\] continue an episode"):
        DreamerRecordLayout(num_envs=2)(batch([1], 0), first_env=1)
    with pytest.raises(ValueError, match="first_env"):
        layout(batch([3, 4], 0, init=True), first_env=3)


def test_worker_envs_say_which_envs_they_are():
    env = worker_env({"name": "cartpole"}, first=2, num_envs=2, seed=0)
    rows, first = batch_envs(env.rollout(4).unsqueeze(0))  # [workers=1, envs=2, T] -> [2, T]
    assert first == 2 and tuple(rows.shape) == (2, 4)
    with pytest.raises(ValueError, match="not consecutive"):
        batch_envs(rows[[1, 0]])
    with pytest.raises(ValueError, match="no 'env_index'"):
        batch_envs(rows.exclude("env_index"))
    env.close()
    # worker w seeds its envs env_seed + w*k: env 2 of a 2-worker run is env 0 of a run seeded 2
    start = worker_env({"name": "cartpole"}, first=2, num_envs=2, seed=0).reset()["observation"][0]
    assert torch.equal(start, make_env(name="cartpole", num_envs=1, seed=2).reset()["observation"][0])
