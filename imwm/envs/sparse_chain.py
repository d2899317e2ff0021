"""A sparse-reward chain with vector observations: a cheap exploration benchmark for a CPU.

The agent starts at cell 0 of a chain of ``length`` cells and moves left or right (left at cell 0
stays there). Reaching the last cell pays 1 and ends the episode; nothing else pays. Episodes are
truncated after ``max_steps`` (default ``2 * length``). Observations are the one-hot cell,
float32 ``[length]``, or with ``pixels=True`` a uint8 ``[3, 16, 16]`` picture of the chain (cells
as blocks of a grid in row-major order, the agent's block white, the goal block dim red) for
image world models (``imwm/SparseChainPixels-v0``). A uniform random policy rarely gets far: with the default 20 cells and
40 steps it reaches the goal in ~0.4% of episodes and its furthest cell is ~7 on average, so
state-visitation coverage and the env step of the first reward measure exploration (in the
spirit of the chain MDPs of Osband et al., "Deep Exploration via Bootstrapped DQN", 2016).

Registered with gymnasium as ``imwm/SparseChain-v0`` and ``imwm/SparseChainPixels-v0`` when
this module is imported, so the training config can use it as
``env.name=gym env.task=imwm/SparseChain-v0``.

Example:
    >>> import gymnasium as gym
    >>> import imwm.envs.sparse_chain  # registers the id
    >>> env = gym.make("imwm/SparseChain-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, int(obs.argmax()), info["cell"]
    ((20,), 0, 0)
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from imwm.errors import check_integer

ENV_ID = "imwm/SparseChain-v0"
PIXELS_ENV_ID = "imwm/SparseChainPixels-v0"
IMAGE_SIZE = 16

__all__ = ["ENV_ID", "PIXELS_ENV_ID", "SparseChainEnv", "cells_from_observations"]


def _grid(length: int) -> tuple[int, int, int, int]:
    """(rows, cols, block height, block width) of the picture of a chain of ``length`` cells."""
    cols = int(np.ceil(np.sqrt(length)))
    rows = int(np.ceil(length / cols))
    return rows, cols, IMAGE_SIZE // rows, IMAGE_SIZE // cols



class SparseChainEnv(gym.Env):
    """The chain described in the module docstring.

    Args:
        length: number of cells (>= 2); the goal is cell ``length - 1``.
        max_steps: truncation horizon (>= 1); default ``2 * length``.
        pixels: observe a uint8 ``[3, 16, 16]`` picture instead of the one-hot vector
            (``length`` <= 64 then, so that every cell keeps a block of at least 2x2 pixels).

    Example:
        >>> env = SparseChainEnv(length=3)
        >>> obs, info = env.reset(seed=0)
        >>> [env.step(1)[1:3] for _ in range(2)]  # (reward, terminated): right twice reaches the goal
        [(0.0, False), (1.0, True)]
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 20, max_steps: int | None = None, pixels: bool = False):
        check_integer("SparseChainEnv length", length, 2)
        max_steps = 2 * int(length) if max_steps is None else max_steps
        check_integer("SparseChainEnv max_steps", max_steps, 1)
        self.length, self.max_steps, self.pixels = int(length), int(max_steps), bool(pixels)
        if self.pixels:
            if self.length > 64:
                raise ValueError(f"SparseChainEnv with pixels=True needs length <= 64, got {length}")
            self.observation_space = spaces.Box(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        else:
            self.observation_space = spaces.Box(0.0, 1.0, (self.length,), np.float32)
        self.action_space = spaces.Discrete(2)  # 0 = left, 1 = right
        self._cell = 0
        self._steps = 0

    def _block(self, cell: int) -> tuple[slice, slice]:
        _, cols, bh, bw = _grid(self.length)
        r, c = divmod(cell, cols)
        return slice(r * bh, (r + 1) * bh), slice(c * bw, (c + 1) * bw)

    def _obs(self) -> np.ndarray:
        if self.pixels:
            img = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
            rows, cols = self._block(self.length - 1)
            img[0, rows, cols] = 96  # the goal, always visible
            rows, cols = self._block(self._cell)
            img[:, rows, cols] = 255  # the agent
            return img
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


def cells_from_observations(observations, length: int = 20) -> np.ndarray:
    """Cell index of each observation: one-hot ``[..., length]`` or picture ``[..., 3, 16, 16]``.

    Example:
        >>> env = SparseChainEnv(length=4, pixels=True)
        >>> pictures = [env.reset()[0]] + [env.step(1)[0] for _ in range(2)]
        >>> cells_from_observations(np.stack(pictures), length=4).tolist()
        [0, 1, 2]
        >>> cells_from_observations(np.eye(4)[[3, 1]], length=4).tolist()
        [3, 1]
    """
    obs = np.asarray(observations)
    if obs.ndim >= 3 and obs.shape[-3:] == (3, IMAGE_SIZE, IMAGE_SIZE):
        rows, cols, bh, bw = _grid(length)
        green = obs[..., 1, : rows * bh, : cols * bw].astype(np.float32)  # the agent is the only green
        blocks = green.reshape(*green.shape[:-2], rows, bh, cols, bw).sum((-3, -1))
        return blocks.reshape(*blocks.shape[:-2], rows * cols)[..., :length].argmax(-1)
    return obs.argmax(-1)


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=SparseChainEnv)
if PIXELS_ENV_ID not in gym.registry:
    gym.register(id=PIXELS_ENV_ID, entry_point=SparseChainEnv, kwargs={"pixels": True})
