"""The known-boundary datasets by name, built from a run's ``data`` config section.

``train_vta`` picks one with ``data=<name>`` (Hydra group ``imwm/configs/data/<name>.yaml``); its
``data.kind`` is the name here. Every other key of the section is either a keyword argument of
the dataset's generator (one to one) or one of :data:`LOADER_KEYS` (how many sequences to draw),
so training, evaluation and analysis regenerate exactly the run's data from its saved config.

| ``data.kind`` | generator |
|---|---|
| ``moving_shapes`` | :func:`imwm.envs.moving_shapes.generate_moving_shapes` (colour + shape + direction change) |
| ``appearance``, ``dynamics``, ``scene_cut`` | :func:`imwm.envs.boundary_videos.generate_boundary_video` |

A saved config without ``kind`` (older runs) means ``moving_shapes``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from tensordict import TensorDict

from imwm.envs.boundary_videos import KINDS, generate_boundary_video
from imwm.envs.moving_shapes import generate_moving_shapes

__all__ = ["DATASETS", "LOADER_KEYS", "dataset_keys", "generate_boundary_data", "BoundaryDataStream"]

DATASETS = ("moving_shapes", *KINDS)
#: keys of a ``data`` section that say how much to draw, not what the data looks like
LOADER_KEYS = ("kind", "seq_len", "batch_size", "heldout_sequences")
_CALL_ONLY = {"num_sequences", "seq_len", "split", "start_index", "kind"}


def _generator(kind: str):
    if kind == "moving_shapes":
        return generate_moving_shapes
    if kind in KINDS:
        return generate_boundary_video
    raise ValueError(f"data.kind must be one of {list(DATASETS)}, got {kind!r}")


def dataset_keys(kind: str) -> set[str]:
    """The generator keyword arguments a ``data`` section of this ``kind`` may set.

    Example:
        >>> sorted(dataset_keys("dynamics"))[:3]
        ['distractor', 'image_size', 'max_seg_len']
    """
    return set(inspect.signature(_generator(kind)).parameters) - _CALL_ONLY


def generate_boundary_data(data: Mapping[str, Any], num_sequences: int, *, split: str = "train",
                           start_index: int = 0, seq_len: int | None = None, seed: int | None = None) -> TensorDict:
    """Sequences of the dataset that a ``data`` config section describes.

    Args:
        data: the section (``kind`` plus generator kwargs; loader keys are ignored here).
        num_sequences: how many sequences, starting at ``start_index`` of ``split``.
        seq_len, seed: replace the section's values when given.

    Raises:
        ValueError: an unknown ``data.kind`` or a key the dataset's generator does not take.

    Example:
        >>> td = generate_boundary_data({"kind": "scene_cut", "image_size": 32, "seq_len": 10}, 2, split="heldout")
        >>> td.batch_size
        torch.Size([2, 10])
    """
    kind = data.get("kind", "moving_shapes")
    accepted = dataset_keys(kind)
    unknown = sorted(set(data) - accepted - set(LOADER_KEYS))
    if unknown:
        raise ValueError(f"data.{unknown[0]} is not an option of data.kind={kind}; valid: {sorted(accepted)}")
    kwargs = {k: v for k, v in data.items() if k in accepted}
    if "object_size" in kwargs:
        kwargs["object_size"] = tuple(float(v) for v in kwargs["object_size"])
    if seed is not None:
        kwargs["seed"] = int(seed)
    length = seq_len if seq_len is not None else data.get("seq_len")
    if length is None:
        raise ValueError("data.seq_len is neither in the dataset config nor given")
    if kind != "moving_shapes":
        kwargs["kind"] = kind
    return _generator(kind)(num_sequences, int(length), split=split, start_index=start_index, **kwargs)


class BoundaryDataStream:
    """Endless, reproducible training batches of a ``data`` section: batch ``k`` holds train
    sequences ``k * batch_size ... (k + 1) * batch_size - 1`` (fresh data; a resumed run sees the
    same batches).

    Example:
        >>> s = BoundaryDataStream({"kind": "appearance", "image_size": 32, "seq_len": 8, "batch_size": 2})
        >>> s.batch(3)["observation"].shape
        torch.Size([2, 8, 3, 32, 32])
    """

    def __init__(self, data: Mapping[str, Any]):
        self.data = dict(data)
        self.batch_size = int(self.data["batch_size"])
        generate_boundary_data(self.data, 1)  # fail now, naming the key, not at the first batch

    def batch(self, k: int) -> TensorDict:
        return generate_boundary_data(self.data, self.batch_size, start_index=k * self.batch_size)
