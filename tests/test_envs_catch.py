"""Catch: the 64x64 pixel game for CPU learning checks of the image world model."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from imwm.configs import CONFIG_DIR
from imwm.envs import make_env
from imwm.envs.catch import (CELL, ENV_ID, GRID, LEFT, OBJECT_COLOR, PADDLE_COLOR, RIGHT, STAY,
                             CatchEnv, drop_outcomes, expert_action, read_frame)
from imwm.training.config import validate_config

CONFIGS = str(CONFIG_DIR)


def episode_return(env, policy, seed):
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total, steps, done = total + reward, steps + 1, terminated or truncated
    return total, steps


def cell_color(obs, row, col, dy, dx):
    """RGB of one pixel of a cell."""
    return tuple(int(v) for v in obs[:, row * CELL + dy, col * CELL + dx])


def test_observation_shape_dtype_range_and_picture():
    check_env(CatchEnv(), skip_render_check=True)
    env = CatchEnv()
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    # the object in the top row, the paddle in the bottom row, black elsewhere
    assert info["object_row"] == 0 and info["paddle"] == GRID // 2
    assert cell_color(obs, 0, info["object_col"], 2, 3) == OBJECT_COLOR
    assert cell_color(obs, GRID - 1, info["paddle"], CELL - 1, 0) == PADDLE_COLOR
    colored = (obs.max(0) > 0).sum()
    assert colored == 6 * 5 + 8 * 3 and obs.max() == 255


def test_seeded_reset_is_deterministic():
    actions = np.random.default_rng(0).integers(3, size=40)

    def rollout(seed):
        env = CatchEnv()
        frames = [env.reset(seed=seed)[0]]
        rewards = []
        for a in actions:
            obs, r, *_ = env.step(int(a))
            frames.append(obs)
            rewards.append(r)
        return np.stack(frames), rewards

    (a, ra), (b, rb), (c, _) = rollout(3), rollout(3), rollout(4)
    assert np.array_equal(a, b) and ra == rb
    assert not np.array_equal(a, c)


def test_reward_on_a_constructed_situation():
    env = CatchEnv(drops=3)
    env.reset(seed=0)
    # the object one row above the bottom, one column right of the paddle
    env._paddle, env._row, env._col = 2, GRID - 2, 3
    obs, reward, terminated, _, info = env.step(RIGHT)  # the paddle moves before the object lands
    assert reward == 1.0 and not terminated and info["caught"] == 1 and info["paddle"] == 3
    assert cell_color(obs, GRID - 1, 3, 2, 3) == OBJECT_COLOR  # shown landing on the paddle
    obs, reward, _, _, info = env.step(STAY)  # gone; the next object appears in the top row
    assert reward == 0.0 and info["object_row"] == 0
    assert obs[0, CELL * (GRID - 1):].max() == PADDLE_COLOR[0]  # no red left at the bottom
    env._paddle, env._row, env._col = 0, GRID - 2, 1
    _, reward, terminated, _, info = env.step(LEFT)  # blocked by the wall: a miss
    assert reward == -1.0 and info["paddle"] == 0 and info["missed"] == 1 and not terminated

    zero = CatchEnv(drops=1, miss_reward=0.0)
    zero.reset(seed=0)
    zero._paddle, zero._row, zero._col = 7, GRID - 2, 0
    _, reward, terminated, _, _ = zero.step(STAY)
    assert reward == 0.0 and terminated  # the last drop ends the episode
    with pytest.raises(RuntimeError, match="reset"):
        zero.step(STAY)


def test_scripted_policy_catches_everything_random_far_below():
    env = CatchEnv()
    expert = [episode_return(env, lambda o: int(expert_action(o)), seed) for seed in range(3)]
    assert expert == [(10.0, 79)] * 3
    rng = np.random.default_rng(0)
    random = [episode_return(env, lambda o: int(rng.integers(3)), seed)[0] for seed in range(5)]
    assert np.mean(random) < -3.0


def test_expert_action_reads_batches():
    env = CatchEnv()
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    cols = np.array([env.reset(seed=s)[1]["object_col"] for s in range(4)])
    assert expert_action(torch.from_numpy(obs)).tolist() == (1 + np.sign(cols - GRID // 2)).tolist()
    with pytest.raises(ValueError, match="observation"):
        expert_action(np.zeros((3, 32, 32), np.uint8))


def test_bad_arguments_are_named():
    for drops in (0, 2.5, "3"):
        with pytest.raises(ValueError, match=f"drops.*{drops}"):
            CatchEnv(drops=drops)
    with pytest.raises(ValueError, match="miss_reward.*nan"):
        CatchEnv(miss_reward=float("nan"))
    env = CatchEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action.*3"):
        env.step(3)


def test_make_env_gives_uint8_chw_frames():
    assert ENV_ID in gym.registry
    env = make_env(name="gym", task=ENV_ID, num_envs=2, seed=0, kwargs={"drops": 2})
    td = env.reset()
    assert td["observation"].shape == (2, 3, 64, 64) and td["observation"].dtype == torch.uint8
    td = env.rollout(20, break_when_any_done=False)  # 15-step episodes: the serial env resets
    assert td["next", "observation"].shape == (2, 20, 3, 64, 64)
    assert td["next", "done"].sum() == 2  # one episode end each
    assert set(td["next", "reward"].unique().tolist()) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("overrides", [["preset=catch"], ["env=catch"]])
def test_catch_configs_compose_and_validate(overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    plain = validate_config(OmegaConf.to_container(cfg, resolve=True))
    assert plain["env"]["name"] == "gym" and plain["env"]["task"] == ENV_ID


def test_read_frame_matches_the_env_state_every_step():
    env, rng = CatchEnv(), np.random.default_rng(0)
    obs, info = env.reset(seed=5)
    for _ in range(200):
        row, col, paddle = (int(x) for x in read_frame(obs))
        assert paddle == info["paddle"]
        if info["object_row"] >= 0:
            assert (row, col) == (info["object_row"], info["object_col"])
        else:  # a landing frame shows the object in the bottom row; info has already cleared it
            assert row in (-1, GRID - 1)
        obs, _, term, _, info = env.step(int(rng.integers(3)))
        if term:
            obs, info = env.reset()
    batch = np.stack([env.reset(seed=s)[0] for s in range(4)])
    rows, cols, paddles = read_frame(torch.as_tensor(batch))
    assert rows.tolist() == [0] * 4 and paddles.tolist() == [GRID // 2] * 4
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 64, 64\]"):
        read_frame(batch[:, :, :32])


def test_drop_outcomes_stay_catches_only_drops_above_the_paddle():
    env = CatchEnv(drops=40)
    obs, info = env.reset(seed=1)
    frames, cols, done = [obs], [info["object_col"]], False
    while not done:
        obs, _, done, _, info = env.step(STAY)
        frames.append(obs)
        if info["object_row"] == 0:
            cols.append(info["object_col"])
    outcomes = drop_outcomes(np.stack(frames))
    assert outcomes.shape == (40, 2)
    assert outcomes[:, 0].tolist() == [abs(c - GRID // 2) for c in cols]
    assert outcomes[:, 1].tolist() == [int(c == GRID // 2) for c in cols]
    assert 0 < outcomes[:, 1].sum() < 40  # both kinds happened
    assert drop_outcomes(np.stack(frames[3:-1])).shape == (38, 2)  # cut drops are left out
