"""The sparse-reward chain used by the intrinsic-reward benchmark."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from imwm.envs.sparse_chain import ENV_ID, PIXELS_ENV_ID, SparseChainEnv, cells_from_observations


def test_dynamics_reward_and_termination():
    env = SparseChainEnv(length=4, max_steps=10)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.tolist() == [1, 0, 0, 0] and info["cell"] == 0
    obs, r, term, trunc, _ = env.step(0)  # left at cell 0 stays
    assert cells_from_observations(obs) == 0 and r == 0.0 and not term
    for expected in (1, 2):
        obs, r, term, trunc, _ = env.step(1)
        assert cells_from_observations(obs) == expected and r == 0.0 and not term and not trunc
    obs, r, term, trunc, _ = env.step(1)
    assert cells_from_observations(obs) == 3 and r == 1.0 and term and not trunc


def test_truncation_and_bad_input():
    env = SparseChainEnv(length=5, max_steps=3)
    env.reset()
    outs = [env.step(0) for _ in range(3)]
    assert [o[3] for o in outs] == [False, False, True] and not any(o[2] for o in outs)
    with pytest.raises(ValueError, match="action"):
        env.step(2)
    with pytest.raises(ValueError, match="length"):
        SparseChainEnv(length=1)
    with pytest.raises(ValueError, match="max_steps"):
        SparseChainEnv(max_steps=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(length=None), "SparseChainEnv length must be an integer >= 2, got None"),
    (dict(max_steps="5"), "SparseChainEnv max_steps must be an integer >= 1, got '5'"),
    (dict(length=float("inf")), "SparseChainEnv length must be an integer >= 2, got inf"),
])
def test_bad_arguments_name_the_argument_and_show_the_value(kwargs, message):
    with pytest.raises(ValueError) as info:
        SparseChainEnv(**kwargs)
    assert str(info.value) == message
    assert SparseChainEnv(length=4, max_steps=6).length == 4


def test_a_float_length_is_refused_even_when_integral():
    with pytest.raises(ValueError, match=r"length must be an integer >= 2, got 4\.0"):
        SparseChainEnv(length=4.0)


def test_gymnasium_api_and_registration():
    check_env(SparseChainEnv(), skip_render_check=True)
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (20,)


def test_random_policy_rarely_reaches_the_goal():
    env = SparseChainEnv()
    rng = np.random.default_rng(0)
    hits, furthest = 0, []
    for _ in range(500):
        env.reset()
        best = 0
        for _ in range(env.max_steps):
            obs, r, term, trunc, _ = env.step(int(rng.integers(2)))
            best = max(best, int(cells_from_observations(obs)))
            hits += int(r > 0)
            if term or trunc:
                break
        furthest.append(best)
    assert hits / 500 < 0.02
    assert 5 < np.mean(furthest) < 9


def test_through_torchrl_gym_env():
    from imwm.envs.gym_vector import make_gym_env

    env = make_gym_env(ENV_ID, num_envs=2, seed=0)
    td = env.rollout(5)
    assert td["observation"].shape == (2, 5, 20) and td["observation"].dtype == torch.float32
    assert td["action"].shape == (2, 5, 2)


def test_pixel_observations_encode_the_cell():
    env = SparseChainEnv(pixels=True)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 16, 16) and obs.dtype == np.uint8
    seen = [cells_from_observations(obs)]
    for _ in range(19):
        obs = env.step(1)[0]
        seen.append(int(cells_from_observations(obs)))
    assert seen == list(range(20))
    assert (obs[:, :, :] == 255).all(0).sum() == 12  # one 4x3 block lit: the agent (now on the goal)
    batch = np.stack([SparseChainEnv(pixels=True, length=7).reset()[0]] * 2)
    assert cells_from_observations(batch, length=7).tolist() == [0, 0]
    with pytest.raises(ValueError, match="length <= 64"):
        SparseChainEnv(pixels=True, length=65)


def test_pixels_through_torchrl_gym_env():
    from imwm.envs.gym_vector import make_gym_env

    td = make_gym_env(PIXELS_ENV_ID, num_envs=1, seed=0).rollout(3)
    assert td["observation"].shape == (1, 3, 3, 16, 16) and td["observation"].dtype == torch.uint8
