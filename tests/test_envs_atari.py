"""Atari env factory on real ROMs: keys, shapes, dtypes, names, both backends, the Collector."""
import pytest
import torch
from torchrl.collectors import Collector

from imwm.envs import make_atari_env, make_env
from imwm.envs.atari import atari_gym_id, atari_tasks


@pytest.mark.parametrize("backend", ["vector", "gym"])
def test_pong_keys_shapes_dtypes(backend):
    env = make_atari_env("pong", num_envs=2, backend=backend, seed=0)
    td = env.reset()
    assert td["observation"].shape == (2, 3, 64, 64)
    assert td["observation"].dtype == torch.uint8
    assert td["is_init"].all()
    rollout = env.rollout(4)
    assert rollout.batch_size == (2, 4)
    assert rollout["action"].shape == (2, 4, 6)
    assert (rollout["action"].sum(-1) == 1).all()  # one-hot
    nxt = rollout["next"]
    assert nxt["observation"].shape == (2, 4, 3, 64, 64) and nxt["observation"].dtype == torch.uint8
    assert nxt["reward"].shape == (2, 4, 1) and nxt["reward"].dtype == torch.float32
    for key in ("done", "terminated", "truncated"):
        assert nxt[key].dtype == torch.bool
    assert nxt["step_count"][:, -1].flatten().tolist() == [4, 4]
    assert "episode_reward" in nxt.keys()
    assert rollout["is_init"][:, 0].all() and not rollout["is_init"][:, 1:].any()
    # Frames move: a real ROM is rendering, not a constant placeholder.
    assert nxt["observation"].float().std() > 1.0
    env.close()


def test_backends_agree_on_first_frame():
    frames = [make_atari_env("breakout", backend=b, sticky=0.0, seed=0).reset()["observation"][0].float()
              for b in ("vector", "gym")]
    # Different resize kernels (C++ area vs. antialiased bilinear): close, not equal.
    assert (frames[0] - frames[1]).abs().mean() < 12.0


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown Atari task 'pongg'.*ms_pacman"):
        make_atari_env("pongg")
    assert atari_gym_id("ms_pacman") == "ALE/MsPacman-v5"
    assert atari_gym_id("atari_private_eye") == "ALE/PrivateEye-v5"
    assert {"pong", "breakout", "ms_pacman", "private_eye", "frostbite"} <= set(atari_tasks())


def test_bad_backend_and_sizes():
    with pytest.raises(ValueError, match="env.backend"):
        make_atari_env("pong", backend="cuda")
    with pytest.raises(ValueError, match="num_envs"):
        make_atari_env("pong", num_envs=0)
    with pytest.raises(ValueError, match="sticky"):
        make_atari_env("pong", sticky=1.5)


@pytest.mark.parametrize("backend", ["vector", "gym"])
def test_collector_runs_atari(backend):
    env = make_atari_env("pong", num_envs=2, backend=backend, seed=0, max_episode_frames=24)
    collector = Collector(env, None, frames_per_batch=16, total_frames=32)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    assert batches[0].batch_size == (2, 8)
    # 24 frames = 6 steps per episode: the collector resets truncated envs and keeps going.
    assert batches[0]["next", "truncated"].any()
    assert batches[0]["is_init"][:, 6].all()


def test_make_env_factory_cartpole_and_atari():
    env = make_env(name="cartpole", num_envs=2, seed=0)
    td = env.reset()
    assert td["observation"].shape == (2, 4) and td["observation"].dtype == torch.float32
    assert env.action_spec.shape == (2, 2)
    env = make_env(name="atari", task="pong", num_envs=1, seed=0)
    assert env.reset()["observation"].shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="env.name"):
        make_env(name="mujoco")
