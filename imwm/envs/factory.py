"""``make_env``: the one place that maps the ``env.*`` config onto an env constructor."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torchrl.envs import EnvBase

from imwm.envs.atari import make_atari_env
from imwm.envs.gym_vector import make_gym_env
from imwm.errors import ConfigError

__all__ = ["make_env", "ENV_NAMES"]

ENV_NAMES = ("cartpole", "gym", "atari")


def make_env(
    *,
    name: str,
    task: str | None = None,
    num_envs: int = 1,
    seed: int | None = None,
    backend: str = "vector",
    frame_skip: int = 4,
    sticky: float = 0.25,
    size: int = 64,
    full_action_space: bool = False,
    max_episode_frames: int = 108_000,
    kwargs: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> EnvBase:
    """Builds the env named by ``env.name`` (keyword arguments match the ``env.*`` config keys).

    - ``cartpole``: gymnasium ``CartPole-v1`` (vector observations; ``task`` ignored);
    - ``gym``: any gymnasium id given as ``task``, with vector or uint8 ``[3, H, W]`` image
      observations (e.g. ``imwm/Catch-v0``);
    - ``atari``: :func:`~imwm.envs.atari.make_atari_env` with ``task`` such as ``"pong"``.

    ``kwargs`` (config ``env.kwargs``) are extra keyword arguments of ``gymnasium.make`` for the
    ``cartpole`` and ``gym`` envs, e.g. ``+env.kwargs.length=40`` for ``imwm/SparseChain-v0``;
    the Atari builder has its own keys and refuses them.

    Returns a batched env (batch ``[num_envs]``).

    Example:
        >>> env = make_env(name="gym", task="imwm/Catch-v0", num_envs=2, seed=0)
        >>> obs = env.reset()["observation"]
        >>> obs.shape, obs.dtype
        (torch.Size([2, 3, 64, 64]), torch.uint8)
        >>> make_env(name="cartpole").batch_size
        torch.Size([1])
    """
    kwargs = dict(kwargs or {})
    if name == "cartpole":
        return make_gym_env("CartPole-v1", num_envs=num_envs, seed=seed, env_kwargs=kwargs, device=device)
    if name == "gym":
        if not task:
            raise ConfigError("env.task", "must name a gymnasium id when env.name is 'gym'", task)
        return make_gym_env(task, num_envs=num_envs, seed=seed, env_kwargs=kwargs, device=device)
    if name == "atari":
        if kwargs:
            raise ConfigError("env.kwargs", "applies to env.name=gym|cartpole only; Atari takes its settings "
                              "from the other env.* keys", kwargs)
        return make_atari_env(
            task, num_envs=num_envs, backend=backend, frame_skip=frame_skip, sticky=sticky,
            size=size, seed=seed, full_action_space=full_action_space,
            max_episode_frames=max_episode_frames, device=device,
        )
    raise ConfigError("env.name", f"must be one of {list(ENV_NAMES)}", name)
