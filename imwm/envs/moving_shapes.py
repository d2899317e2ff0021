"""Moving Shapes: procedurally generated video with known segment boundaries.

Each sequence shows one *actor* object moving over a black background and bouncing off the
walls, plus a grey *distractor* square that moves and bounces the whole time and never changes.
The sequence is cut into segments of random length (uniform in ``[min_seg_len, max_seg_len]``).
At the first frame of every segment the actor changes colour (always a different colour from an
8-colour palette), redraws its shape (square, disc or triangle; may stay the same) and its
direction of motion; its position carries over (no teleport). So a change is visible, but so is
motion everywhere, wall bounces (direction changes that are *not* boundaries) and the
distractor: a detector has to tell a segment change from ordinary motion.

Ground truth: ``true_boundary[t] = True`` where frame ``t`` starts a new segment; frame 0 of every
sequence starts one by definition (evaluate on ``t >= 1``). Everything is generated with numpy
from a seed; nothing is downloaded. Train and held-out sequences come from disjoint seed streams
(``numpy.random.default_rng([seed, split_id, index])``), so the same ``seed`` always gives the
same data and the held-out data is never trained on.

Records are a ``TensorDict`` with batch ``[N, T]``:

| key | shape | dtype |
|---|---|---|
| ``observation`` | ``[3, S, S]`` | uint8 |
| ``true_boundary`` | ``[1]`` | bool |
| ``is_first`` | ``[1]`` | bool (True at t=0) |
| ``action`` | ``[1]`` | float zeros (video: no actions; lets Dynamics modules consume it) |
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["PALETTE", "SPLITS", "generate_moving_shapes", "moving_shapes_split", "MovingShapesStream"]

PALETTE = np.array(
    [
        [230, 40, 40],  # red
        [40, 200, 60],  # green
        [50, 90, 240],  # blue
        [240, 220, 40],  # yellow
        [220, 60, 220],  # magenta
        [40, 220, 220],  # cyan
        [250, 140, 30],  # orange
        [150, 90, 250],  # violet
    ],
    dtype=np.uint8,
)
SPLITS = {"train": 0, "heldout": 1}
_SHAPES = 3  # square, disc, triangle


def _check(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _segment_starts(rng: np.random.Generator, seq_len: int, lo: int, hi: int) -> np.ndarray:
    starts = [0]
    while True:
        nxt = starts[-1] + int(rng.integers(lo, hi + 1))
        if nxt >= seq_len:
            return np.asarray(starts)
        starts.append(nxt)


def _bounce(pos: np.ndarray, vel: np.ndarray, low: float, high: float) -> None:
    """One step of motion with reflection off [low, high], in place."""
    pos += vel
    over, under = pos > high, pos < low
    pos[over] = 2 * high - pos[over]
    pos[under] = 2 * low - pos[under]
    vel[over | under] *= -1


def _masks(shape_id: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Boolean masks [T, S, S] of the actor for every frame."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    square = (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    disc = dx**2 + dy**2 <= radius**2
    # upward triangle: apex at (cx, cy - r), base at cy + r
    rel = (dy + radius) / (2 * radius)
    tri = (rel >= 0) & (rel <= 1) & (np.abs(dx) <= rel * radius)
    s = shape_id[:, None, None]
    return np.where(s == 0, square, np.where(s == 1, disc, tri))


def _one_sequence(rng: np.random.Generator, seq_len: int, size: int, lo: int, hi: int,
                  object_size: tuple[float, float]):
    scale = size / 64.0
    radius = float(rng.uniform(*object_size)) * size
    starts = _segment_starts(rng, seq_len, lo, hi)
    boundary = np.zeros(seq_len, dtype=bool)
    boundary[starts] = True
    seg_id = np.cumsum(boundary) - 1
    n_seg = len(starts)
    colours = np.empty(n_seg, dtype=np.int64)
    colours[0] = rng.integers(len(PALETTE))
    for k in range(1, n_seg):  # always a different colour at a change
        colours[k] = (colours[k - 1] + rng.integers(1, len(PALETTE))) % len(PALETTE)
    shapes = rng.integers(_SHAPES, size=n_seg)
    angles = rng.uniform(0, 2 * np.pi, size=n_seg)
    speeds = rng.uniform(1.5, 3.0, size=n_seg) * scale

    pos = rng.uniform(radius, size - 1 - radius, size=2)
    cx, cy = np.empty(seq_len, np.float32), np.empty(seq_len, np.float32)
    vel = np.zeros(2)
    # distractor: a small grey square, constant speed, never changes
    d_half = 3.0 * scale
    d_pos = rng.uniform(d_half, size - 1 - d_half, size=2)
    d_ang = rng.uniform(0, 2 * np.pi)
    d_vel = np.array([np.cos(d_ang), np.sin(d_ang)]) * 2.0 * scale
    dxs, dys = np.empty(seq_len, np.float32), np.empty(seq_len, np.float32)
    for t in range(seq_len):
        if boundary[t]:
            k = seg_id[t]
            vel = np.array([np.cos(angles[k]), np.sin(angles[k])]) * speeds[k]
        if t > 0:
            _bounce(pos, vel, radius, size - 1 - radius)
            _bounce(d_pos, d_vel, d_half, size - 1 - d_half)
        cx[t], cy[t] = pos
        dxs[t], dys[t] = d_pos

    frames = np.zeros((seq_len, size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d_mask = (np.abs(xx[None] - dxs[:, None, None]) <= d_half) & (np.abs(yy[None] - dys[:, None, None]) <= d_half)
    frames[d_mask] = 128
    a_mask = _masks(shapes[seg_id], cx, cy, radius, size)
    colour = PALETTE[colours[seg_id]][:, None, None, :]  # [T, 1, 1, 3]
    frames[a_mask] = np.broadcast_to(colour, frames.shape)[a_mask]
    return frames.transpose(0, 3, 1, 2), boundary


def generate_moving_shapes(
    num_sequences: int,
    seq_len: int,
    *,
    image_size: int = 64,
    min_seg_len: int = 4,
    max_seg_len: int = 12,
    seed: int = 0,
    split: str = "train",
    start_index: int = 0,
    object_size: tuple[float, float] = (0.09, 0.14),
) -> TensorDict:
    """Generate ``num_sequences`` sequences of ``seq_len`` frames (deterministic per arguments).

    ``object_size`` is the range of the actor's radius as a fraction of the frame side.

    Sequence ``i`` of a split is drawn from ``default_rng([seed, split_id, start_index + i])``, so
    any sub-range can be regenerated on its own (``start_index``) and the splits never overlap.

    Returns:
        TensorDict with batch ``[num_sequences, seq_len]`` and the keys of the module docstring.

    Example:
        >>> td = generate_moving_shapes(2, 16, image_size=32, seed=1)
        >>> td["observation"].shape, td["observation"].dtype
        (torch.Size([2, 16, 3, 32, 32]), torch.uint8)
    """
    _check("num_sequences", num_sequences, 1)
    _check("seq_len", seq_len, 2)
    _check("image_size", image_size, 16)
    _check("min_seg_len", min_seg_len, 1)
    _check("max_seg_len", max_seg_len, min_seg_len)
    _check("start_index", start_index, 0)
    lo_size, hi_size = (float(v) for v in object_size)
    if not 0.02 <= lo_size <= hi_size <= 0.4:
        raise ValueError(f"object_size must be (lo, hi) with 0.02 <= lo <= hi <= 0.4, got {tuple(object_size)!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    frames = np.empty((num_sequences, seq_len, 3, image_size, image_size), dtype=np.uint8)
    bounds = np.empty((num_sequences, seq_len), dtype=bool)
    for i in range(num_sequences):
        rng = np.random.default_rng([seed, SPLITS[split], start_index + i])
        frames[i], bounds[i] = _one_sequence(rng, seq_len, image_size, min_seg_len, max_seg_len, (lo_size, hi_size))
    is_first = np.zeros((num_sequences, seq_len, 1), dtype=bool)
    is_first[:, 0] = True
    return TensorDict(
        {
            "observation": torch.from_numpy(frames),
            "true_boundary": torch.from_numpy(bounds).unsqueeze(-1),
            "is_first": torch.from_numpy(is_first),
            "action": torch.zeros(num_sequences, seq_len, 1),
        },
        batch_size=[num_sequences, seq_len],
    )


def moving_shapes_split(split: str, num_sequences: int, seq_len: int, **kwargs) -> TensorDict:
    """Shorthand for ``generate_moving_shapes(num_sequences, seq_len, split=split, **kwargs)``."""
    return generate_moving_shapes(num_sequences, seq_len, split=split, **kwargs)


class MovingShapesStream:
    """An endless, reproducible stream of training batches.

    Batch ``k`` holds train sequences ``k * batch_size ... (k + 1) * batch_size - 1``, so every
    batch is fresh data and a restarted run sees the same batches.
    """

    def __init__(self, batch_size: int, seq_len: int, **kwargs):
        _check("batch_size", batch_size, 1)
        self.batch_size, self.seq_len, self.kwargs = batch_size, seq_len, kwargs
        self.kwargs.setdefault("split", "train")

    def batch(self, k: int) -> TensorDict:
        return generate_moving_shapes(
            self.batch_size, self.seq_len, start_index=k * self.batch_size, **self.kwargs
        )
