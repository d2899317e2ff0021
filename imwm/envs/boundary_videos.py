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
``[N, T]`` with ``observation`` ``[3, S, S]`` uint8, ``true_boundary`` / ``is_first`` ``[1]`` bool,
``action`` ``[1]`` zeros and ``actor_bounce`` / ``distractor_bounce`` ``[1]`` bool (wall bounces; none
for a distractor that is not drawn). Sequence ``i`` of a split is drawn from
``numpy.random.default_rng([seed, split_id, kind_id, start_index + i])``, so every kind, split and
sub-range is reproducible on its own and the train and held-out splits never overlap.
"""

from __future__ import annotations

import numpy as np
from tensordict import TensorDict

from imwm.envs.shape_videos import (DISTRACTOR_GREY, PALETTE, bounce, check_video_args, different, paint, render,
                                    segments, shape_masks, split_id, square_masks, velocity)
from imwm.errors import check_bool

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


def _velocity(rng: np.random.Generator, angle: float, size: int) -> np.ndarray:
    # 3.5-6% of the frame side per frame: fast enough that a turn is visible after one frame
    return velocity(angle, rng.uniform(0.035, 0.06) * size)


def _texture_mask(texture: np.ndarray, size: int) -> np.ndarray:
    """Where the actor's own colour shows ([T, S, S]); elsewhere inside it a darker shade."""
    t = texture[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size]
    horizontal = (yy[None] // 2) % 2 == 0
    vertical = (xx[None] // 2) % 2 == 0
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
    boundary, seg_id, n_seg = segments(rng, seq_len, lo, hi)
    shape = int(rng.integers(3))
    colours = different(rng, n_seg, len(PALETTE)) if kind == "appearance" else np.full(n_seg, rng.integers(len(PALETTE)))
    textures = rng.integers(_TEXTURES, size=n_seg) if kind == "appearance" else np.zeros(n_seg, dtype=np.int64)
    scenes = different(rng, n_seg, len(BACKGROUNDS)) if kind == "scene_cut" else np.zeros(n_seg, dtype=np.int64)
    patterns = rng.integers(_PATTERNS, size=n_seg) if kind == "scene_cut" else np.zeros(n_seg, dtype=np.int64)

    d_half = radius * 0.85  # the distractor is a square as big as the actor
    lo_a, hi_a, lo_d, hi_d = radius, size - 1 - radius, d_half, size - 1 - d_half
    pos = rng.uniform(lo_a, hi_a, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    vel = _velocity(rng, angle, size)
    d_pos = rng.uniform(lo_d, hi_d, size=2)
    d_vel = _velocity(rng, rng.uniform(0, 2 * np.pi), size)
    track = np.empty((seq_len, 4), np.float32)  # actor x, y; distractor x, y
    bounces = np.zeros((seq_len, 2), dtype=bool)  # actor, distractor (none recorded when it is not drawn)
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
            bounces[t] = bounce(pos, vel, lo_a, hi_a), bounce(d_pos, d_vel, lo_d, hi_d) and distractor
        track[t] = (*pos, *d_pos)

    frames = _background(scenes[seg_id], patterns[seg_id], size)
    if distractor:
        frames[square_masks(track[:, 2], track[:, 3], d_half, size)] = DISTRACTOR_GREY
    colour = PALETTE[colours[seg_id]].astype(np.int64)[:, None, None, :]
    shaded = np.where(_texture_mask(textures[seg_id], size)[..., None], colour, colour // 2).astype(np.uint8)
    paint(frames, shape_masks(np.full(seq_len, shape), track[:, 0], track[:, 1], radius, size), shaded)
    return frames.transpose(0, 3, 1, 2), boundary, bounces


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
    size_range = check_video_args(num_sequences, seq_len, image_size, min_seg_len, max_seg_len, start_index,
                                  object_size)
    check_bool("distractor", distractor)
    stream = (seed, split_id(split), KINDS[kind])
    return render(num_sequences, seq_len, image_size, stream, start_index,
                  lambda rng: _one_sequence(rng, kind, seq_len, image_size, min_seg_len, max_seg_len,
                                            size_range, distractor))
