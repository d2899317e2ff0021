"""Gymnasium envs (``CartPole-v1``, ``imwm/Catch-v0``, ...) for cheap learning checks."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torchrl.envs import DoubleToFloat, EnvBase, GymEnv, SerialEnv, TransformedEnv

from imwm.envs.atari import episode_transforms
from imwm.errors import ConfigError

__all__ = ["make_gym_env"]


def make_gym_env(
    task: str = "CartPole-v1",
    *,
    num_envs: int = 1,
    seed: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> EnvBase:
    """Builds a batched (``[num_envs]``) TorchRL ``GymEnv``.

    Float64 vector observations become float32; uint8 ``[3, H, W]`` images (``imwm/Catch-v0``)
    pass through unchanged, which is what the world model's image encoder takes.

    ``env_kwargs`` go to ``gymnasium.make`` (through ``GymEnv``); an argument the env does not
    take fails here, once, with the offending names.

    Discrete actions are one-hot (TorchRL's default encoding). The same episode trackers as
    the Atari envs are added: ``is_init``, ``episode_reward``, ``step_count``.

    Example:
        >>> env = make_gym_env("CartPole-v1", num_envs=2, seed=0)
        >>> env.reset()["observation"].shape
        torch.Size([2, 4])
    """
    import gymnasium as gym

    if task not in gym.registry:
        raise ConfigError("env.task", f"unknown gymnasium env id {task!r}")
    if num_envs < 1:
        raise ValueError(f"env num_envs must be >= 1, got {num_envs}")
    env_kwargs = dict(env_kwargs or {})
    if env_kwargs:
        try:  # check once, with gymnasium's own message, before the serial env hides it
            gym.make(task, **env_kwargs).close()
        except TypeError as err:
            raise ConfigError("env.kwargs", f"not accepted by {task!r}: {err}", env_kwargs) from err

    def make_one() -> EnvBase:
        env = GymEnv(task, device=device, **env_kwargs)
        obs_spec = env.observation_spec["observation"]
        if obs_spec.dtype == torch.float64:
            env = TransformedEnv(env, DoubleToFloat(in_keys=["observation"]))
        return env

    base = SerialEnv(num_envs, make_one)
    if seed is not None:
        base.set_seed(seed)
    return TransformedEnv(base, episode_transforms())
