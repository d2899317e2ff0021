"""Catch: a procedurally drawn 64x64 arcade game, a pixel learning task a CPU can afford.

The field is a grid of 8 x 8 cells of 8 x 8 pixels. One object at a time falls from a random
column of the top row, one row per step; the agent moves a paddle along the bottom row (actions
0 = left, 1 = stay, 2 = right; the walls stop it). When the object reaches the bottom row it is
scored: +1 if it lands on the paddle (same column), ``miss_reward`` (default -1) if not. That frame
shows the object on (or beside) the paddle, so the frame that carries a reward also shows why;
the next step removes it and drops a new one. After ``drops`` objects (default 10) the episode
terminates: 8 steps a drop, ``8 * drops - 1`` steps an episode (79).

A drop gives the paddle 7 informed moves and it never has more than 7 columns to cover, so a
policy that moves under the object catches every one (return ``drops``, 10). A uniform random
policy catches ~14% (measured over 100 episodes: return -7.2, std 2.3; staying put scores the
same), so learning shows as a climb from about -7 to +10.

Observations are uint8 ``[3, 64, 64]`` (channels first, as the Atari envs give): a black field, the
object a 6 x 5 yellow block in the top of its cell, the paddle a 8 x 3 blue bar in the bottom of
its cell, so the two never overlap. Drawing is two numpy slice assignments.

Registered with gymnasium as ``imwm/Catch-v0`` when this module is imported, so training can use
``env=catch`` (``configs/env/catch.yaml``) or ``env.name=gym env.task=imwm/Catch-v0``.

Example:
    >>> import gymnasium as gym
    >>> import imwm.envs.catch  # registers the id
    >>> env = gym.make("imwm/Catch-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype, info["paddle"], info["object_row"]
    ((3, 64, 64), dtype('uint8'), 4, 0)
    >>> obs, reward, terminated, truncated, info = env.step(int(expert_action(obs)))
    >>> info["object_row"], reward
    (1, 0.0)
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from imwm.errors import check_integer

ENV_ID = "imwm/Catch-v0"
GRID = 8  # cells per side
CELL = 8  # pixels per cell side
IMAGE_SIZE = GRID * CELL
OBJECT_COLOR = (255, 220, 40)  # yellow: the only bright red, so a picture parses by channel
PADDLE_COLOR = (40, 140, 255)  # blue
OBJECT_ROWS = slice(0, 5)  # pixel rows of the object inside its cell (top)
OBJECT_COLS = slice(1, 7)
PADDLE_ROWS = slice(CELL - 3, CELL)  # pixel rows of the paddle inside its cell (bottom)
LEFT, STAY, RIGHT = 0, 1, 2
_OBJECT = np.array(OBJECT_COLOR, np.uint8)[:, None, None]  # broadcast over a block
_PADDLE = np.array(PADDLE_COLOR, np.uint8)[:, None, None]

__all__ = ["ENV_ID", "IMAGE_SIZE", "CatchEnv", "expert_action", "read_frame", "drop_outcomes"]


class CatchEnv(gym.Env):
    """The game described in the module docstring.

    Args:
        drops: objects per episode (integer >= 1).
        miss_reward: reward for an object that misses the paddle (finite; a catch pays 1).

    Info: ``paddle`` (paddle column), ``object_row`` / ``object_col`` (-1 when no object is in
    the air: between drops and after the last), ``caught`` and ``missed`` so far.

    Example:
        >>> env = CatchEnv(drops=2)
        >>> _ = env.reset(seed=0)
        >>> steps = [env.step(STAY) for _ in range(15)]  # 8 * drops - 1 steps
        >>> [t for t, (_, reward, *_) in enumerate(steps, 1) if reward != 0], steps[-1][2]
        ([7, 15], True)
    """

    metadata = {"render_modes": []}

    def __init__(self, drops: int = 10, miss_reward: float = -1.0):
        check_integer("CatchEnv drops", drops)
        if (isinstance(miss_reward, bool) or not isinstance(miss_reward, (int, float, np.number))
                or not math.isfinite(miss_reward)):
            raise ValueError(f"CatchEnv miss_reward must be a finite number, got {miss_reward!r}")
        self.drops, self.miss_reward = int(drops), float(miss_reward)
        self.observation_space = spaces.Box(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        self.action_space = spaces.Discrete(3)
        self._paddle = GRID // 2
        self._row = self._col = -1  # object cell; -1 = none in the air
        self._caught = self._missed = 0

    def _spawn(self) -> None:
        self._row, self._col = 0, int(self.np_random.integers(GRID))

    def _obs(self) -> np.ndarray:
        img = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        y, x = (GRID - 1) * CELL, self._paddle * CELL
        img[:, y + PADDLE_ROWS.start:y + PADDLE_ROWS.stop, x:x + CELL] = _PADDLE
        if self._row >= 0:
            y, x = self._row * CELL, self._col * CELL
            img[:, y + OBJECT_ROWS.start:y + OBJECT_ROWS.stop,
                x + OBJECT_COLS.start:x + OBJECT_COLS.stop] = _OBJECT
        return img

    def _info(self) -> dict:
        return {"paddle": self._paddle, "object_row": self._row, "object_col": self._col,
                "caught": self._caught, "missed": self._missed}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._paddle = GRID // 2
        self._caught = self._missed = 0
        self._spawn()
        return self._obs(), self._info()

    def step(self, action):
        action = int(action)
        if action not in (LEFT, STAY, RIGHT):
            raise ValueError(f"CatchEnv action must be 0 (left), 1 (stay) or 2 (right), "
                             f"got {action}")
        if self._caught + self._missed >= self.drops:
            raise RuntimeError("CatchEnv.step after the episode terminated; call reset()")
        # the paddle moves before the object falls, so the last move still counts
        self._paddle = min(GRID - 1, max(0, self._paddle + action - 1))
        reward, terminated = 0.0, False
        if self._row < 0:  # the previous object was scored last step: drop the next
            self._spawn()
        else:
            self._row += 1
            if self._row == GRID - 1:
                if self._col == self._paddle:
                    reward, self._caught = 1.0, self._caught + 1
                else:
                    reward, self._missed = self.miss_reward, self._missed + 1
                terminated = self._caught + self._missed >= self.drops
        obs = self._obs()
        if self._row == GRID - 1:
            self._row = self._col = -1  # shown on this frame; gone from the next
        return obs, reward, terminated, False, self._info()


def expert_action(observation) -> np.ndarray:
    """The scripted policy: move toward the falling object's column, read from the picture.

    Catches every object, so its return is the maximum (``drops``). Stays when no object is in
    the air.

    Args:
        observation: uint8 ``[..., 3, 64, 64]`` Catch frames (numpy or torch on CPU).

    Returns:
        int64 actions ``[...]`` (0 = left, 1 = stay, 2 = right).

    Example:
        >>> env = CatchEnv()
        >>> obs, info = env.reset(seed=1)
        >>> int(expert_action(obs)) == 1 + int(np.sign(info["object_col"] - info["paddle"]))
        True
    """
    _, col, paddle = read_frame(observation)
    target = np.where(col >= 0, col, paddle)
    return (1 + np.sign(target - paddle)).astype(np.int64)


def read_frame(observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The game state drawn in Catch frames: object row and column (-1 when none), paddle column.

    Args:
        observation: uint8 ``[..., 3, 64, 64]`` Catch frames (numpy or torch on CPU).

    Returns:
        int64 arrays ``[...]``: ``object_row``, ``object_col`` and ``paddle``.

    Example:
        >>> env = CatchEnv()
        >>> obs, info = env.reset(seed=3)
        >>> [int(x) for x in read_frame(obs)] == [0, info["object_col"], info["paddle"]]
        True
    """
    obs = np.asarray(observation)
    if obs.shape[-3:] != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"Catch observation must be [..., 3, 64, 64], got shape {obs.shape}")
    lead = obs.shape[:-3]
    # the object is the only bright red; the bottom pixel row is only paddle
    red = obs[..., 0, :, :] > 128
    rows = red.any(-1).reshape(*lead, GRID, CELL).any(-1)
    cols = red.any(-2).reshape(*lead, GRID, CELL).any(-1)
    seen = rows.any(-1)
    blue = obs[..., 2, -1, :].astype(np.int64).reshape(*lead, GRID, CELL).sum(-1)
    return (np.where(seen, rows.argmax(-1), -1), np.where(seen, cols.argmax(-1), -1),
            blue.argmax(-1))


def drop_outcomes(frames) -> np.ndarray:
    """Per drop of one episode: how far the paddle started from the object, and whether it caught it.

    Separates what a policy cannot do from what it does not do: every distance is reachable (a
    drop gives 7 moves, see the module docstring), so misses at large distances point at a policy
    that moves late or the wrong way, not at the task.

    Args:
        frames: uint8 ``[T, 3, 64, 64]``, one episode's frames in order (reset frame first).

    Returns:
        int64 ``[drops, 2]``: ``|object column - paddle column|`` in the frame where the object
        appears, and 1 if it landed on the paddle. A drop whose first or last frame is missing
        from ``frames`` is left out.

    Example:
        >>> env = CatchEnv(drops=3)
        >>> obs, _ = env.reset(seed=0)
        >>> frames, done = [obs], False
        >>> while not done:
        ...     obs, _, done, _, _ = env.step(int(expert_action(obs)))
        ...     frames.append(obs)
        >>> drop_outcomes(np.stack(frames))[:, 1].tolist()
        [1, 1, 1]
    """
    row, col, paddle = read_frame(frames)
    out, start = [], None
    for t in range(len(row)):
        if row[t] == 0:
            start = int(abs(col[t] - paddle[t]))
        elif row[t] == GRID - 1 and start is not None:
            out.append((start, int(col[t] == paddle[t])))
            start = None
    return np.array(out, dtype=np.int64).reshape(-1, 2)


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=CatchEnv)
