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
| ``actor_bounce``, ``distractor_bounce`` | ``[1]`` | bool (the object reflected off a wall at ``t``: not a boundary) |
"""

from __future__ import annotations

import numpy as np
from tensordict import TensorDict

from imwm.envs.shape_videos import (DISTRACTOR_GREY, PALETTE, SPLITS, bounce, check_video_args, different,
                                    paint, render, segments, shape_masks, split_id, square_masks, velocity)
from imwm.errors import check_integer

__all__ = ["PALETTE", "SPLITS", "generate_moving_shapes", "moving_shapes_split", "MovingShapesStream"]

_SHAPES = 3  # square, disc, triangle


def _one_sequence(rng: np.random.Generator, seq_len: int, size: int, lo: int, hi: int,
                  object_size: tuple[float, float]):
    scale = size / 64.0
    radius = float(rng.uniform(*object_size)) * size
    boundary, seg_id, n_seg = segments(rng, seq_len, lo, hi)
    colours = different(rng, n_seg, len(PALETTE))  # always a different colour at a change
    shapes = rng.integers(_SHAPES, size=n_seg)
    angles = rng.uniform(0, 2 * np.pi, size=n_seg)
    speeds = rng.uniform(1.5, 3.0, size=n_seg) * scale

    pos = rng.uniform(radius, size - 1 - radius, size=2)
    cx, cy = np.empty(seq_len, np.float32), np.empty(seq_len, np.float32)
    vel = np.zeros(2)
    # distractor: a small grey square, constant speed, never changes
    d_half = 3.0 * scale
    d_pos = rng.uniform(d_half, size - 1 - d_half, size=2)
    d_vel = velocity(rng.uniform(0, 2 * np.pi), 2.0 * scale)
    dxs, dys = np.empty(seq_len, np.float32), np.empty(seq_len, np.float32)
    bounces = np.zeros((seq_len, 2), dtype=bool)  # actor, distractor
    for t in range(seq_len):
        if boundary[t]:
            k = seg_id[t]
            vel = velocity(angles[k], speeds[k])
        if t > 0:
            bounces[t] = bounce(pos, vel, radius, size - 1 - radius), bounce(d_pos, d_vel, d_half, size - 1 - d_half)
        cx[t], cy[t] = pos
        dxs[t], dys[t] = d_pos

    frames = np.zeros((seq_len, size, size, 3), dtype=np.uint8)
    frames[square_masks(dxs, dys, d_half, size)] = DISTRACTOR_GREY
    colour = PALETTE[colours[seg_id]][:, None, None, :]  # [T, 1, 1, 3]
    paint(frames, shape_masks(shapes[seg_id], cx, cy, radius, size), colour)
    return frames.transpose(0, 3, 1, 2), boundary, bounces


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
    size_range = check_video_args(num_sequences, seq_len, image_size, min_seg_len, max_seg_len, start_index,
                                  object_size)
    stream = (seed, split_id(split))
    return render(num_sequences, seq_len, image_size, stream, start_index,
                  lambda rng: _one_sequence(rng, seq_len, image_size, min_seg_len, max_seg_len, size_range))


def moving_shapes_split(split: str, num_sequences: int, seq_len: int, **kwargs) -> TensorDict:
    """Shorthand for ``generate_moving_shapes(num_sequences, seq_len, split=split, **kwargs)``.

    Example:
        >>> held = moving_shapes_split("heldout", 2, 8, image_size=16)["observation"]
        >>> held.shape
        torch.Size([2, 8, 3, 16, 16])
        >>> bool((held == generate_moving_shapes(2, 8, image_size=16, split="heldout")["observation"]).all())
        True
    """
    return generate_moving_shapes(num_sequences, seq_len, split=split, **kwargs)


class MovingShapesStream:
    """An endless, reproducible stream of training batches.

    Batch ``k`` holds train sequences ``k * batch_size ... (k + 1) * batch_size - 1``, so every
    batch is fresh data and a restarted run sees the same batches.

    Example:
        >>> stream = MovingShapesStream(2, 8, image_size=16, seed=1)
        >>> stream.batch(0)["observation"].shape
        torch.Size([2, 8, 3, 16, 16])
        >>> third_and_fourth = generate_moving_shapes(2, 8, image_size=16, seed=1, start_index=2)
        >>> bool((stream.batch(1)["observation"] == third_and_fourth["observation"]).all())
        True
    """

    def __init__(self, batch_size: int, seq_len: int, **kwargs):
        check_integer("batch_size", batch_size, 1)
        self.batch_size, self.seq_len, self.kwargs = batch_size, seq_len, kwargs
        self.kwargs.setdefault("split", "train")

    def batch(self, k: int) -> TensorDict:
        return generate_moving_shapes(
            self.batch_size, self.seq_len, start_index=k * self.batch_size, **self.kwargs
        )
