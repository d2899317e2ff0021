"""make_env: env.kwargs reach gymnasium.make, and bad ones are named."""
import pytest

import imwm.envs.sparse_chain  # noqa: F401  (registers imwm/SparseChain-v0)
from imwm.envs import make_env


def test_env_kwargs_reach_gymnasium_make():
    env = make_env(name="gym", task="imwm/SparseChain-v0", num_envs=2, seed=0, kwargs={"length": 7})
    assert env.reset()["observation"].shape == (2, 7)
    assert make_env(name="gym", task="imwm/SparseChain-v0").reset()["observation"].shape == (1, 20)


def test_env_kwargs_bad_input_names_them():
    with pytest.raises(ValueError, match="env.kwargs.*not_an_arg"):
        make_env(name="gym", task="imwm/SparseChain-v0", kwargs={"not_an_arg": 1})
    with pytest.raises(ValueError, match="env.kwargs: applies to env.name=gym"):
        make_env(name="atari", task="pong", kwargs={"length": 3})
