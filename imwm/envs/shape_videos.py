"""What the procedural shape videos share: segments, motion, drawing and the record layout.

:mod:`imwm.envs.moving_shapes` and :mod:`imwm.envs.boundary_videos` draw objects that bounce
around a frame and change at segment boundaries; they differ in *what* changes. The pieces here
are the parts they have in common, so both datasets draw, move and store their objects one way:

- argument checks (:func:`check_int`, :func:`check_video_args`, :func:`split_id`);
- random segmentation (:func:`segments`) and per-segment choices (:func:`different`);
- motion (:func:`velocity`, :func:`bounce`);
- drawing (:func:`shape_masks`, :func:`square_masks`, :func:`paint`);
- generation of a batch, one seeded generator per sequence (:func:`render`), and its records
  (:func:`records`).

Every helper draws from the generator it is given in a fixed order, so a dataset built from them
is reproducible bit for bit from its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tensordict import TensorDict

__all__ = [
    "DISTRACTOR_GREY",
    "PALETTE",
    "SPLITS",
    "bounce",
    "check_int",
    "check_video_args",
    "different",
    "paint",
    "records",
    "render",
    "segments",
    "shape_masks",
    "split_id",
    "square_masks",
    "velocity",
]

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
#: split -> id mixed into every sequence's seed, so train and held-out data never overlap
SPLITS = {"train": 0, "heldout": 1}
#: grey level of the distractor square (the same on every channel)
DISTRACTOR_GREY = 128


def check_int(name: str, value, minimum: int) -> None:
    """Raises ``ValueError`` unless ``value`` is an int (not a bool) ``>= minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_video_args(num_sequences, seq_len, image_size, min_seg_len, max_seg_len, start_index,
                     object_size) -> tuple[float, float]:
    """Checks the sizes every shape-video generator takes.

    Returns:
        ``object_size`` as a ``(lo, hi)`` pair of floats.

    Raises:
        ValueError: the first argument out of range, in the order of the signature.
    """
    check_int("num_sequences", num_sequences, 1)
    check_int("seq_len", seq_len, 2)
    check_int("image_size", image_size, 16)
    check_int("min_seg_len", min_seg_len, 1)
    check_int("max_seg_len", max_seg_len, min_seg_len)
    check_int("start_index", start_index, 0)
    lo_size, hi_size = (float(v) for v in object_size)
    if not 0.02 <= lo_size <= hi_size <= 0.4:
        raise ValueError(f"object_size must be (lo, hi) with 0.02 <= lo <= hi <= 0.4, got {tuple(object_size)!r}")
    return lo_size, hi_size


def split_id(split: str) -> int:
    """The seed id of ``split`` (``"train"`` or ``"heldout"``); ``ValueError`` for any other."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return SPLITS[split]


def segments(rng: np.random.Generator, seq_len: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Cuts ``seq_len`` frames into segments of a length uniform in ``[lo, hi]``.

    Returns:
        ``(boundary, seg_id, n_seg)``: ``boundary[t]`` is True where frame ``t`` starts a segment
        (always at ``t = 0``), ``seg_id[t]`` the segment of frame ``t`` and ``n_seg`` their count.
    """
    starts = [0]
    while True:
        nxt = starts[-1] + int(rng.integers(lo, hi + 1))
        if nxt >= seq_len:
            break
        starts.append(nxt)
    boundary = np.zeros(seq_len, dtype=bool)
    boundary[starts] = True
    return boundary, np.cumsum(boundary) - 1, len(starts)


def different(rng: np.random.Generator, n: int, choices: int) -> np.ndarray:
    """``n`` indices in ``[0, choices)``, each different from the one before."""
    out = np.empty(n, dtype=np.int64)
    out[0] = rng.integers(choices)
    for k in range(1, n):
        out[k] = (out[k - 1] + rng.integers(1, choices)) % choices
    return out


def velocity(angle: float, speed: float) -> np.ndarray:
    """The 2-D velocity ``(x, y)`` of ``speed`` pixels per frame in the direction ``angle``."""
    return np.array([np.cos(angle), np.sin(angle)]) * speed


def bounce(pos: np.ndarray, vel: np.ndarray, low: float, high: float) -> None:
    """One step of motion with reflection off [low, high], in place."""
    pos += vel
    over, under = pos > high, pos < low
    pos[over] = 2 * high - pos[over]
    pos[under] = 2 * low - pos[under]
    vel[over | under] *= -1


def _offsets(cx: np.ndarray, cy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``[T, S, S]`` x and y offsets of every pixel from the centres ``(cx[t], cy[t])``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]


def square_masks(cx: np.ndarray, cy: np.ndarray, half: float, size: int) -> np.ndarray:
    """Boolean masks ``[T, S, S]`` of an axis-aligned square of half side ``half`` per frame."""
    dx, dy = _offsets(cx, cy, size)
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)


def shape_masks(shape_id: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Boolean masks ``[T, S, S]`` of the actor for every frame: 0 square, 1 disc, 2 triangle."""
    dx, dy = _offsets(cx, cy, size)
    square = (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    disc = dx**2 + dy**2 <= radius**2
    # upward triangle: apex at (cx, cy - r), base at cy + r
    rel = (dy + radius) / (2 * radius)
    tri = (rel >= 0) & (rel <= 1) & (np.abs(dx) <= rel * radius)
    s = shape_id[:, None, None]
    return np.where(s == 0, square, np.where(s == 1, disc, tri))


def paint(frames: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Sets ``frames [T, S, S, 3]`` to ``colour`` (broadcast to the frames) where ``mask``, in place."""
    frames[mask] = np.broadcast_to(colour, frames.shape)[mask]


def render(num_sequences: int, seq_len: int, size: int, stream: Sequence[int], start_index: int,
           one_sequence: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]) -> TensorDict:
    """Draws ``num_sequences`` sequences, each from its own generator, and returns their records.

    Args:
        num_sequences, seq_len, size: how many sequences of how many ``size x size`` frames.
        stream: the seed prefix of the dataset (seed, split id, ...); sequence ``i`` is drawn
            from ``default_rng([*stream, start_index + i])``, so any sub-range regenerates alone.
        start_index: index of the first sequence.
        one_sequence: ``rng -> (frames [T, 3, S, S] uint8, boundary [T] bool)``.
    """
    frames = np.empty((num_sequences, seq_len, 3, size, size), dtype=np.uint8)
    bounds = np.empty((num_sequences, seq_len), dtype=bool)
    for i in range(num_sequences):
        rng = np.random.default_rng([*stream, start_index + i])
        frames[i], bounds[i] = one_sequence(rng)
    return records(frames, bounds)


def records(frames: np.ndarray, bounds: np.ndarray) -> TensorDict:
    """The ``[N, T]`` TensorDict of a video batch: ``frames [N, T, 3, S, S]``, ``bounds [N, T]``.

    Keys: ``observation``, ``true_boundary`` and ``is_first`` (``[1]`` bool, True at ``t = 0``) and
    ``action`` (``[1]`` float zeros: videos have no actions, but Dynamics modules consume one).
    """
    num_sequences, seq_len = bounds.shape
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
