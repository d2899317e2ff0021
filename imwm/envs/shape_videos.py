"""What the procedural shape videos share: segments, motion, drawing and the record layout.

:mod:`imwm.envs.moving_shapes` and :mod:`imwm.envs.boundary_videos` draw objects that bounce
around a frame and change at segment boundaries; they differ in *what* changes. The pieces here
are the parts they have in common, so both datasets draw, move and store their objects one way:

- argument checks (:func:`check_video_args`, :func:`split_id`);
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

from imwm.errors import check_integer

__all__ = [
    "DISTRACTOR_GREY",
    "PALETTE",
    "SPLITS",
    "bounce",
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


def check_video_args(num_sequences, seq_len, image_size, min_seg_len, max_seg_len, start_index,
                     object_size) -> tuple[float, float]:
    """Checks the sizes every shape-video generator takes.

    Returns:
        ``object_size`` as a ``(lo, hi)`` pair of floats.

    Raises:
        ValueError: the first argument out of range, in the order of the signature.

    Example:
        >>> check_video_args(2, 8, 32, 2, 4, 0, object_size=[0.1, 0.2])
        (0.1, 0.2)
        >>> check_video_args(2, 8, 32, 5, 4, 0, object_size=(0.1, 0.2))  # max_seg_len < min_seg_len
        Traceback (most recent call last):
        ...
        ValueError: max_seg_len must be an integer >= 5, got 4
    """
    check_integer("num_sequences", num_sequences, 1)
    check_integer("seq_len", seq_len, 2)
    check_integer("image_size", image_size, 16)
    check_integer("min_seg_len", min_seg_len, 1)
    check_integer("max_seg_len", max_seg_len, min_seg_len)
    check_integer("start_index", start_index, 0)
    try:
        lo_size, hi_size = (float(v) for v in object_size)
    except (TypeError, ValueError):  # a scalar, a triple, a string: the same one-line error
        lo_size = hi_size = float("nan")
    if not 0.02 <= lo_size <= hi_size <= 0.4:
        raise ValueError(f"object_size must be (lo, hi) with 0.02 <= lo <= hi <= 0.4, got {object_size!r}")
    return lo_size, hi_size


def split_id(split: str) -> int:
    """The seed id of ``split`` (``"train"`` or ``"heldout"``); ``ValueError`` for any other.

    Example:
        >>> split_id("train"), split_id("heldout")
        (0, 1)
        >>> split_id("test")
        Traceback (most recent call last):
        ...
        ValueError: split must be one of ['heldout', 'train'], got 'test'
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return SPLITS[split]


def segments(rng: np.random.Generator, seq_len: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Cuts ``seq_len`` frames into segments of a length uniform in ``[lo, hi]``.

    Returns:
        ``(boundary, seg_id, n_seg)``: ``boundary[t]`` is True where frame ``t`` starts a segment
        (always at ``t = 0``), ``seg_id[t]`` the segment of frame ``t`` and ``n_seg`` their count.

    Example:
        >>> boundary, seg_id, n_seg = segments(np.random.default_rng(0), 8, 3, 3)  # every segment 3 long
        >>> boundary.astype(int).tolist(), seg_id.tolist(), n_seg
        ([1, 0, 0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 1, 1, 2, 2], 3)
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
    """``n`` indices in ``[0, choices)``, each different from the one before.

    Example:
        >>> different(np.random.default_rng(0), 6, 2).tolist()  # two choices: they alternate
        [1, 0, 1, 0, 1, 0]
    """
    out = np.empty(n, dtype=np.int64)
    out[0] = rng.integers(choices)
    for k in range(1, n):
        out[k] = (out[k - 1] + rng.integers(1, choices)) % choices
    return out


def velocity(angle: float, speed: float) -> np.ndarray:
    """The 2-D velocity ``(x, y)`` of ``speed`` pixels per frame in the direction ``angle``.

    Example:
        >>> velocity(0.0, 2.0).tolist(), velocity(np.pi / 2, 2.0).round(6).tolist()
        ([2.0, 0.0], [0.0, 2.0])
    """
    return np.array([np.cos(angle), np.sin(angle)]) * speed


def bounce(pos: np.ndarray, vel: np.ndarray, low: float, high: float) -> bool:
    """One step of motion with reflection off [low, high], in place; True when it reflected.

    Example:
        >>> pos, vel = np.array([8.0, 5.0]), np.array([3.0, -1.0])
        >>> bounce(pos, vel, 0.0, 10.0)  # x = 11 passes 10 by 1: reflected to 9, its velocity flips
        True
        >>> pos.tolist(), vel.tolist()
        ([9.0, 4.0], [-3.0, -1.0])
        >>> bounce(pos, vel, 0.0, 10.0)  # 6, 3: inside, no reflection
        False
    """
    pos += vel
    over, under = pos > high, pos < low
    pos[over] = 2 * high - pos[over]
    pos[under] = 2 * low - pos[under]
    hit = over | under
    vel[hit] *= -1
    return bool(hit.any())


def _offsets(cx: np.ndarray, cy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``[T, S, S]`` x and y offsets of every pixel from the centres ``(cx[t], cy[t])``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]


def square_masks(cx: np.ndarray, cy: np.ndarray, half: float, size: int) -> np.ndarray:
    """Boolean masks ``[T, S, S]`` of an axis-aligned square of half side ``half`` per frame.

    Example:
        >>> square_masks(np.array([2.0]), np.array([2.0]), 1.0, 5)[0].astype(int)
        array([[0, 0, 0, 0, 0],
               [0, 1, 1, 1, 0],
               [0, 1, 1, 1, 0],
               [0, 1, 1, 1, 0],
               [0, 0, 0, 0, 0]])
    """
    dx, dy = _offsets(cx, cy, size)
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)


def shape_masks(shape_id: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Boolean masks ``[T, S, S]`` of the actor for every frame: 0 square, 1 disc, 2 triangle.

    Example:
        >>> masks = shape_masks(np.array([0, 1, 2]), np.full(3, 2.0), np.full(3, 2.0), 2.0, 5)
        >>> masks.sum((1, 2)).tolist()  # square of half side 0.85 * 2: 3 x 3; disc of radius 2: 13
        [9, 13, 13]
        >>> masks[2].astype(int)
        array([[0, 0, 1, 0, 0],
               [0, 0, 1, 0, 0],
               [0, 1, 1, 1, 0],
               [0, 1, 1, 1, 0],
               [1, 1, 1, 1, 1]])
    """
    dx, dy = _offsets(cx, cy, size)
    square = (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    disc = dx**2 + dy**2 <= radius**2
    # upward triangle: apex at (cx, cy - r), base at cy + r
    rel = (dy + radius) / (2 * radius)
    tri = (rel >= 0) & (rel <= 1) & (np.abs(dx) <= rel * radius)
    s = shape_id[:, None, None]
    return np.where(s == 0, square, np.where(s == 1, disc, tri))


def paint(frames: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Sets ``frames [T, S, S, 3]`` to ``colour`` (broadcast to the frames) where ``mask``, in place.

    Example:
        >>> frames = np.zeros((1, 1, 2, 3), np.uint8)
        >>> paint(frames, np.array([[[True, False]]]), PALETTE[0])  # red
        >>> frames[0, 0].tolist()
        [[230, 40, 40], [0, 0, 0]]
    """
    frames[mask] = np.broadcast_to(colour, frames.shape)[mask]


def render(num_sequences: int, seq_len: int, size: int, stream: Sequence[int], start_index: int,
           one_sequence: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]]) -> TensorDict:
    """Draws ``num_sequences`` sequences, each from its own generator, and returns their records.

    Args:
        num_sequences, seq_len, size: how many sequences of how many ``size x size`` frames.
        stream: the seed prefix of the dataset (seed, split id, ...); sequence ``i`` is drawn
            from ``default_rng([*stream, start_index + i])``, so any sub-range regenerates alone.
        start_index: index of the first sequence.
        one_sequence: ``rng -> (frames [T, 3, S, S] uint8, boundary [T] bool, bounces [T, 2] bool)``,
            ``bounces`` the steps where the actor (column 0) or the distractor (column 1) reflects
            off a wall.

    Example:
        >>> def grey_clip(rng):  # one random grey level, a boundary at t = 0 and t = 2, no bounce
        ...     frames = np.full((3, 3, 16, 16), rng.integers(256), np.uint8)
        ...     return frames, np.array([True, False, True]), np.zeros((3, 2), bool)
        >>> td = render(2, 3, 16, (0, 0), 0, grey_clip)
        >>> td.batch_size, td["true_boundary"][0, :, 0].tolist()
        (torch.Size([2, 3]), [True, False, True])
        >>> torch.equal(render(1, 3, 16, (0, 0), 1, grey_clip)["observation"][0], td["observation"][1])
        True
    """
    frames = np.empty((num_sequences, seq_len, 3, size, size), dtype=np.uint8)
    bounds = np.empty((num_sequences, seq_len), dtype=bool)
    bounces = np.empty((num_sequences, seq_len, 2), dtype=bool)
    for i in range(num_sequences):
        rng = np.random.default_rng([*stream, start_index + i])
        frames[i], bounds[i], bounces[i] = one_sequence(rng)
    return records(frames, bounds, bounces)


def records(frames: np.ndarray, bounds: np.ndarray, bounces: np.ndarray) -> TensorDict:
    """The ``[N, T]`` TensorDict of a video batch: ``frames [N, T, 3, S, S]``, ``bounds [N, T]``,
    ``bounces [N, T, 2]`` (actor, distractor).

    Keys: ``observation``, ``true_boundary`` and ``is_first`` (``[1]`` bool, True at ``t = 0``),
    ``action`` (``[1]`` float zeros: videos have no actions, but Dynamics modules consume one), and
    ``actor_bounce`` / ``distractor_bounce`` (``[1]`` bool: the object reflected off a wall at that
    step; ordinary motion, not a boundary, kept so that READs off the changes can be checked
    against it).

    Example:
        >>> bounces = np.zeros((2, 3, 2), bool); bounces[0, 1, 0] = True
        >>> td = records(np.zeros((2, 3, 3, 4, 4), np.uint8), np.array([[1, 0, 1], [1, 1, 0]], bool), bounces)
        >>> td["observation"].shape, td["true_boundary"].shape
        (torch.Size([2, 3, 3, 4, 4]), torch.Size([2, 3, 1]))
        >>> td["is_first"][..., 0].tolist(), td["actor_bounce"][0, :, 0].tolist()
        ([[True, False, False], [True, False, False]], [False, True, False])
    """
    num_sequences, seq_len = bounds.shape
    assert bounces.shape == (num_sequences, seq_len, 2), f"bounces must be [N, T, 2], got {bounces.shape}"
    is_first = np.zeros((num_sequences, seq_len, 1), dtype=bool)
    is_first[:, 0] = True
    return TensorDict(
        {
            "observation": torch.from_numpy(frames),
            "true_boundary": torch.from_numpy(bounds).unsqueeze(-1),
            "is_first": torch.from_numpy(is_first),
            "action": torch.zeros(num_sequences, seq_len, 1),
            "actor_bounce": torch.from_numpy(bounces[..., :1].copy()),
            "distractor_bounce": torch.from_numpy(bounces[..., 1:].copy()),
        },
        batch_size=[num_sequences, seq_len],
    )
