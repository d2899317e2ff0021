"""Known-boundary videos, one kind of change each: ``appearance``, ``dynamics``, ``scene_cut``.

A family of procedural videos in the spirit of :mod:`imwm.envs.moving_shapes`, but where a segment
change alters exactly one thing, so a boundary detector can be tested on each kind of change on
its own:

| kind | what changes at the first frame of a segment | what stays |
|---|---|---|
| ``appearance`` | the actor's colour (always a different one) and its fill texture | motion (position and velocity carry over) |
| ``dynamics`` | the actor's velocity (direction turns by 60-180 degrees, new speed) | colour, shape, position |
| ``scene_cut`` | the background (colour and stripe pattern) and the positions of every object | the actor's colour and shape |

One actor (a square, disc or triangle, one shape per sequence) moves and bounces off the walls;
wall bounces are ordinary motion, *not* boundaries. With ``distractor=True`` a grey square of
the actor's size moves and bounces the whole time and never changes (at a ``scene_cut`` it jumps
with everything else, since the whole scene changes). ``object_size`` is the actor's radius range
as a fraction of the frame side (``(0.09, 0.14)`` small, ``(0.2, 0.28)`` large).

Ground truth and records are exactly those of Moving Shapes: ``true_boundary[t]`` is True where
frame ``t`` starts a segment (frame 0 always does; evaluate on ``t >= 1``); a ``TensorDict``
``[N, T]`` with ``observation`` ``[3, S, S]`` uint8, ``true_boundary`` / ``is_first`` ``[1]`` bool and
``action`` ``[1]`` zeros. Sequence ``i`` of a split is drawn from
``numpy.random.default_rng([seed, split_id, kind_id, start_index + i])``, so every kind, split and
sub-range is reproducible on its own and the train and held-out splits never overlap.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

from imwm.envs.moving_shapes import PALETTE, SPLITS, _bounce, _check, _masks, _segment_starts

__all__ = ["KINDS", "BACKGROUNDS", "generate_boundary_video"]

#: kind -> id mixed into the seed (distinct streams per kind; Moving Shapes has no kind id).
KINDS = {"appearance": 1, "dynamics": 2, "scene_cut": 3}
#: dark scene colours (all channels below the palette's brightest), so actors stay visible on them
BACKGROUNDS = np.array(
    [[0, 0, 0], [70, 20, 20], [20, 60, 20], [20, 30, 80], [70, 60, 10], [60, 20, 70], [10, 60, 60], [60, 60, 60]],
    dtype=np.uint8,
)
_TEXTURES = 3  # solid, horizontal stripes, vertical stripes
_PATTERNS = 4  # background: plain, horizontal, vertical, diagonal stripes


def _different(rng: np.random.Generator, n: int, choices: int) -> np.ndarray:
    """``n`` indices in ``[0, choices)``, each different from the one before."""
    out = np.empty(n, dtype=np.int64)
    out[0] = rng.integers(choices)
    for k in range(1, n):
        out[k] = (out[k - 1] + rng.integers(1, choices)) % choices
    return out


def _velocity(rng: np.random.Generator, angle: float, size: int) -> np.ndarray:
    # 3.5-6% of the frame side per frame: fast enough that a turn is visible after one frame
    speed = rng.uniform(0.035, 0.06) * size
    return np.array([np.cos(angle), np.sin(angle)]) * speed


def _texture_mask(texture: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Where the actor's own colour shows ([T, S, S]); elsewhere inside it a darker shade."""
    t = texture[:, None, None]
    horizontal = (yy[None].astype(np.int64) // 2) % 2 == 0
    vertical = (xx[None].astype(np.int64) // 2) % 2 == 0
    return np.where(t == 0, True, np.where(t == 1, horizontal, vertical))


def _background(kind_id: np.ndarray, pattern: np.ndarray, size: int) -> np.ndarray:
    """Scene images [T, S, S, 3]: a dark colour with a stripe pattern (brighter stripes)."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.stack([np.zeros_like(yy, dtype=bool), yy % 6 < 2, xx % 6 < 2, (xx + yy) % 6 < 2])  # [P, S, S]
    base = BACKGROUNDS[kind_id].astype(np.int64)[:, None, None, :]  # [T, 1, 1, 3]
    lit = stripes[pattern][..., None]  # [T, S, S, 1]
    return np.where(lit, base + 35, base).astype(np.uint8)


def _one_sequence(rng: np.random.Generator, kind: str, seq_len: int, size: int, lo: int, hi: int,
                  object_size: tuple[float, float], distractor: bool):
    radius = float(rng.uniform(*object_size)) * size
    starts = _segment_starts(rng, seq_len, lo, hi)
    boundary = np.zeros(seq_len, dtype=bool)
    boundary[starts] = True
    seg_id = np.cumsum(boundary) - 1
    n_seg = len(starts)
    shape = int(rng.integers(3))
    colours = _different(rng, n_seg, len(PALETTE)) if kind == "appearance" else np.full(n_seg, rng.integers(len(PALETTE)))
    textures = rng.integers(_TEXTURES, size=n_seg) if kind == "appearance" else np.zeros(n_seg, dtype=np.int64)
    scenes = _different(rng, n_seg, len(BACKGROUNDS)) if kind == "scene_cut" else np.zeros(n_seg, dtype=np.int64)
    patterns = rng.integers(_PATTERNS, size=n_seg) if kind == "scene_cut" else np.zeros(n_seg, dtype=np.int64)

    d_half = radius * 0.85  # the distractor is a square as big as the actor
    lo_a, hi_a, lo_d, hi_d = radius, size - 1 - radius, d_half, size - 1 - d_half
    pos = rng.uniform(lo_a, hi_a, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    vel = _velocity(rng, angle, size)
    d_pos = rng.uniform(lo_d, hi_d, size=2)
    d_vel = _velocity(rng, rng.uniform(0, 2 * np.pi), size)
    track = np.empty((seq_len, 4), np.float32)  # actor x, y; distractor x, y
    for t in range(seq_len):
        if t > 0 and boundary[t]:
            if kind == "dynamics":  # turn by 60-180 degrees either way and draw a new speed
                angle = float(np.arctan2(vel[1], vel[0])) + rng.choice([-1, 1]) * rng.uniform(np.pi / 3, np.pi)
                vel = _velocity(rng, angle, size)
            elif kind == "scene_cut":  # a new shot: every object somewhere else, moving anew
                pos = rng.uniform(lo_a, hi_a, size=2)
                vel = _velocity(rng, rng.uniform(0, 2 * np.pi), size)
                d_pos = rng.uniform(lo_d, hi_d, size=2)
                d_vel = _velocity(rng, rng.uniform(0, 2 * np.pi), size)
        if t > 0 and not (kind == "scene_cut" and boundary[t]):
            _bounce(pos, vel, lo_a, hi_a)
        if t > 0 and not (kind == "scene_cut" and boundary[t]):
            _bounce(d_pos, d_vel, lo_d, hi_d)
        track[t] = (*pos, *d_pos)

    frames = _background(scenes[seg_id], patterns[seg_id], size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if distractor:
        d_mask = (np.abs(xx[None] - track[:, 2, None, None]) <= d_half) & (
            np.abs(yy[None] - track[:, 3, None, None]) <= d_half)
        frames[d_mask] = 128
    a_mask = _masks(np.full(seq_len, shape), track[:, 0], track[:, 1], radius, size)
    colour = PALETTE[colours[seg_id]].astype(np.int64)[:, None, None, :]
    shaded = np.where(_texture_mask(textures[seg_id], yy, xx)[..., None], colour, colour // 2).astype(np.uint8)
    frames[a_mask] = shaded[a_mask]
    return frames.transpose(0, 3, 1, 2), boundary


def generate_boundary_video(
    num_sequences: int,
    seq_len: int,
    *,
    kind: str = "appearance",
    image_size: int = 32,
    min_seg_len: int = 4,
    max_seg_len: int = 12,
    object_size: tuple[float, float] = (0.09, 0.14),
    distractor: bool = True,
    seed: int = 0,
    split: str = "train",
    start_index: int = 0,
) -> TensorDict:
    """Generate ``num_sequences`` sequences of one ``kind`` of change (deterministic per arguments).

    Args:
        num_sequences, seq_len: how many sequences of how many frames.
        kind: ``"appearance"``, ``"dynamics"`` or ``"scene_cut"`` (module docstring).
        image_size: frame side in pixels (>= 16).
        min_seg_len, max_seg_len: true segment lengths are uniform in this range.
        object_size: ``(lo, hi)`` range of the actor's radius, fractions of the frame side.
        distractor: add a grey square that moves the whole time and never changes.
        seed, split, start_index: sequence ``i`` comes from
            ``default_rng([seed, split_id, kind_id, start_index + i])``.

    Returns:
        TensorDict ``[num_sequences, seq_len]`` with the Moving Shapes record keys.

    Example:
        >>> td = generate_boundary_video(2, 12, kind="dynamics", image_size=32, seed=1)
        >>> td["observation"].shape, bool(td["true_boundary"][:, 0].all())
        (torch.Size([2, 12, 3, 32, 32]), True)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    _check("num_sequences", num_sequences, 1)
    _check("seq_len", seq_len, 2)
    _check("image_size", image_size, 16)
    _check("min_seg_len", min_seg_len, 1)
    _check("max_seg_len", max_seg_len, min_seg_len)
    _check("start_index", start_index, 0)
    lo_size, hi_size = (float(v) for v in object_size)
    if not 0.02 <= lo_size <= hi_size <= 0.4:
        raise ValueError(f"object_size must be (lo, hi) with 0.02 <= lo <= hi <= 0.4, got {tuple(object_size)!r}")
    if not isinstance(distractor, bool):
        raise ValueError(f"distractor must be true or false, got {distractor!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    frames = np.empty((num_sequences, seq_len, 3, image_size, image_size), dtype=np.uint8)
    bounds = np.empty((num_sequences, seq_len), dtype=bool)
    for i in range(num_sequences):
        rng = np.random.default_rng([seed, SPLITS[split], KINDS[kind], start_index + i])
        frames[i], bounds[i] = _one_sequence(rng, kind, seq_len, image_size, min_seg_len, max_seg_len,
                                             (lo_size, hi_size), distractor)
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
