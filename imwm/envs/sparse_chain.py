"""A sparse-reward chain with vector observations: a cheap exploration benchmark for a CPU.

The agent starts at cell 0 of a chain of ``length`` cells and moves left or right (left at cell 0
stays there). Reaching the last cell pays 1 and ends the episode; nothing else pays. Episodes are
truncated after ``max_steps`` (default ``2 * length``). Observations are the one-hot cell,
float32 ``[length]``. A uniform random policy rarely gets far: with the default 20 cells and
40 steps it reaches the goal in ~0.4% of episodes and its furthest cell is ~7 on average, so
state-visitation coverage and the env step of the first reward measure exploration (in the
spirit of the chain MDPs of Osband et al., "Deep Exploration via Bootstrapped DQN", 2016).

Registered with gymnasium as ``imwm/SparseChain-v0`` when this module is imported, so the
training config can use it as ``env.name=gym env.task=imwm/SparseChain-v0``.

Example:
    >>> import gymnasium as gym
    >>> import imwm.envs.sparse_chain  # registers the id
    >>> env = gym.make("imwm/SparseChain-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.argmax(), info["cell"]
    ((20,), 0, 0)
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "imwm/SparseChain-v0"

__all__ = ["ENV_ID", "SparseChainEnv", "cells_from_observations"]


class SparseChainEnv(gym.Env):
    """The chain described in the module docstring.

    Args:
        length: number of cells (>= 2); the goal is cell ``length - 1``.
        max_steps: truncation horizon (>= 1); default ``2 * length``.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 20, max_steps: int | None = None):
        if int(length) != length or length < 2:
            raise ValueError(f"SparseChainEnv length must be an integer >= 2, got {length}")
        max_steps = 2 * int(length) if max_steps is None else max_steps
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"SparseChainEnv max_steps must be an integer >= 1, got {max_steps}")
        self.length, self.max_steps = int(length), int(max_steps)
        self.observation_space = spaces.Box(0.0, 1.0, (self.length,), np.float32)
        self.action_space = spaces.Discrete(2)  # 0 = left, 1 = right
        self._cell = 0
        self._steps = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length, np.float32)
        obs[self._cell] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._cell, self._steps = 0, 0
        return self._obs(), {"cell": self._cell}

    def step(self, action):
        action = int(action)
        if action not in (0, 1):
            raise ValueError(f"SparseChainEnv action must be 0 (left) or 1 (right), got {action}")
        self._cell = min(self.length - 1, max(0, self._cell + (1 if action == 1 else -1)))
        self._steps += 1
        terminated = self._cell == self.length - 1
        truncated = not terminated and self._steps >= self.max_steps
        return self._obs(), float(terminated), terminated, truncated, {"cell": self._cell}


def cells_from_observations(observations) -> np.ndarray:
    """Cell index of each one-hot observation ``[..., length]`` (numpy or torch)."""
    return np.asarray(observations).argmax(-1)


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=SparseChainEnv)
