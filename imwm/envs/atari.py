"""Atari envs for DreamerV3: 64x64 RGB uint8 frames, frame skip 4, sticky actions 0.25.

Two backends produce the same keys and layout:

- ``"vector"`` (default for training): :class:`~imwm.envs.ale_vector.AleVectorEnv`, ale-py's
  native threaded vector env; frame skip with max-pooling of the last two frames and the
  resize happen in C++.
- ``"gym"``: TorchRL ``GymEnv("ALE/<Game>-v5", frame_skip=4, repeat_action_probability=...)`` and
  :class:`~imwm.envs.resize.ResizeFrames`. ALE v5 keeps the last frame of the skip (no
  max-pooling), so its frames can differ slightly from the vector backend's.

Both get TorchRL's ``InitTracker`` (``is_init``), ``RewardSum`` (``episode_reward``) and
``StepCounter`` (``step_count``). DreamerV3's Atari settings (Hafner et al., 2023): 64x64 RGB,
action repeat 4, sticky actions, no noop starts, no fire-on-reset, no reward clipping,
optionally the full 18-action set.
"""
from __future__ import annotations

import difflib
from functools import lru_cache

import torch
from torchrl.envs import (Compose, EnvBase, ExcludeTransform, GymEnv, InitTracker, RewardSum,
                          SerialEnv, StepCounter, TransformedEnv)

from imwm.envs.ale_vector import AleVectorEnv
from imwm.errors import ConfigError
from imwm.envs.resize import ResizeFrames

__all__ = ["make_atari_env", "atari_tasks", "atari_gym_id", "episode_transforms"]

BACKENDS = ("vector", "gym")


def _camel(task: str) -> str:
    return "".join(part.capitalize() for part in task.split("_"))


@lru_cache(maxsize=1)
def atari_tasks() -> tuple[str, ...]:
    """Snake-case task names with both a ROM in ale-py and a gymnasium ``ALE/<Game>-v5`` id."""
    import ale_py
    import gymnasium as gym
    from ale_py import roms

    gym.register_envs(ale_py)
    return tuple(t for t in roms.get_all_rom_ids() if f"ALE/{_camel(t)}-v5" in gym.registry)


def _canonical_task(task: str) -> str:
    if not isinstance(task, str):
        raise ConfigError("env.task", "must be a string such as 'pong'", task)
    name = task.strip().lower()
    if name.startswith("atari_"):  # DreamerV3's "atari_ms_pacman" spelling
        name = name[len("atari_"):]
    if name not in atari_tasks():
        close = difflib.get_close_matches(name, atari_tasks(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError("env.task", f"unknown Atari task {task!r}{hint}; valid tasks are: {', '.join(atari_tasks())}")
    return name


def atari_gym_id(task: str) -> str:
    """``"ms_pacman"`` -> ``"ALE/MsPacman-v5"``; raises listing valid names when unknown.

    Example:
        >>> atari_gym_id("ms_pacman"), atari_gym_id("atari_ms_pacman")
        ('ALE/MsPacman-v5', 'ALE/MsPacman-v5')
        >>> try:
        ...     atari_gym_id("pongg")
        ... except ConfigError as err:  # the message goes on to list every valid task
        ...     print(str(err).split(";")[0])
        env.task: unknown Atari task 'pongg' (did you mean 'pong'?)
    """
    return f"ALE/{_camel(_canonical_task(task))}-v5"


def episode_transforms() -> Compose:
    """``is_init``, episode return (``episode_reward``) and length (``step_count``) trackers.

    Example:
        >>> [type(t).__name__ for t in episode_transforms()]
        ['InitTracker', 'RewardSum', 'StepCounter']
    """
    return Compose(InitTracker(), RewardSum(), StepCounter())


def make_atari_env(
    task: str,
    *,
    num_envs: int = 1,
    backend: str = "vector",
    frame_skip: int = 4,
    sticky: float = 0.25,
    size: int = 64,
    seed: int | None = None,
    full_action_space: bool = False,
    max_episode_frames: int = 108_000,
    device: str | torch.device = "cpu",
) -> EnvBase:
    """Builds a batched Atari env (batch ``[num_envs]``) with DreamerV3 preprocessing.

    Args:
        task: game in snake case (``"pong"``, ``"breakout"``, ``"ms_pacman"``, ``"private_eye"``,
            ``"frostbite"``, ...; an ``"atari_"`` prefix is accepted).
        num_envs: number of environments in the batch.
        backend: ``"vector"`` (ale-py's C++ vector env) or ``"gym"`` (TorchRL ``GymEnv``).
        frame_skip: action repeat.
        sticky: repeat-action probability.
        size: frame height and width.
        seed: seed of the first reset.
        full_action_space: all 18 actions instead of the game's minimal set.
        max_episode_frames: emulator frames before truncation.
        device: device of the env's tensors.

    Returns:
        A TorchRL ``EnvBase`` with ``observation`` uint8 ``[num_envs, 3, size, size]``, one-hot
        ``action``, ``reward``, ``done``/``terminated``/``truncated``, ``is_init``,
        ``episode_reward`` and ``step_count``.

    Example:
        >>> env = make_atari_env("pong", num_envs=2)
        >>> env.reset()["observation"].shape
        torch.Size([2, 3, 64, 64])
    """
    game = _canonical_task(task)
    if backend not in BACKENDS:
        raise ConfigError("env.backend", f"must be one of {list(BACKENDS)}", backend)
    if num_envs < 1:
        raise ValueError(f"env num_envs must be >= 1, got {num_envs}")
    if backend == "vector":
        base = AleVectorEnv(
            game,
            num_envs,
            frame_skip=frame_skip,
            sticky=sticky,
            size=size,
            full_action_space=full_action_space,
            max_episode_frames=max_episode_frames,
            seed=seed,
            device=device,
        )
    else:
        gym_id = atari_gym_id(game)

        def make_one() -> EnvBase:
            env = GymEnv(
                gym_id,
                frame_skip=frame_skip,
                repeat_action_probability=sticky,
                full_action_space=full_action_space,
                max_num_frames_per_episode=max_episode_frames,
                device=device,
            )
            # ALE's RGB frames come as "pixels" [210, 160, 3]; keep only the resized copy.
            return TransformedEnv(
                env,
                Compose(
                    ResizeFrames(size, in_keys=["pixels"], out_keys=["observation"]),
                    ExcludeTransform("pixels"),
                ),
            )

        base = SerialEnv(num_envs, make_one)
        if seed is not None:
            base.set_seed(seed)
    return TransformedEnv(base, episode_transforms())
