"""Atomic, pickle-free checkpoints and replay snapshots (docs/architecture.md, "Checkpoints").

A checkpoint is ``torch.save`` of a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it and cannot run code from the file. Files are
written to ``<name>.tmp`` and moved into place with ``os.replace`` (atomic on POSIX), so a crash
mid-write leaves the previous checkpoint intact. The replay buffer goes beside it through
TorchRL's ``ReplayBuffer.dumps`` into a temporary directory that is then renamed; TorchRL's
pickle of an (empty) prefetch queue is removed from the snapshot and refused on load.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "save_replay",
    "load_replay",
    "rng_state",
    "set_rng_state",
]


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Writes ``state`` to ``path`` atomically (``path.tmp`` then ``os.replace``).

    Args:
        path: destination file, e.g. ``runs/x/checkpoints/latest.pt``.
        state: plain dict (tensors, numbers, strings, lists, dicts, None).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:  # make the bytes durable before the rename publishes them
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Reads a checkpoint with ``torch.load(weights_only=True)`` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def save_replay(buffer, directory: str | os.PathLike) -> Path:
    """``buffer.dumps`` into ``<directory>.tmp``, then swaps it in for ``directory``."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    buffer.dumps(tmp)
    _drop_empty_prefetch_pickle(tmp)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


# Files that TorchRL's ``ReplayBuffer.loads`` would unpickle / ``torch.load`` without weights_only.
_UNSAFE_REPLAY_FILES = ("prefetch.pkl", "transform.t")


def _drop_empty_prefetch_pickle(directory: Path) -> None:
    """TorchRL writes ``prefetch.pkl`` (a pickle) even with no prefetching; ``loads`` would
    unpickle it. We remove it when it holds nothing, so a snapshot needs no unpickling."""
    import pickle

    path = directory / "prefetch.pkl"
    if not path.exists():
        return
    with open(path, "rb") as f:  # our own file, written a moment ago
        state = pickle.load(f)
    if state is None or not state.get("queue"):
        path.unlink()


def load_replay(buffer, directory: str | os.PathLike) -> None:
    """Restores a buffer written by :func:`save_replay` (storage, sampler, writer state).

    Refuses snapshots holding files that TorchRL would unpickle (``prefetch.pkl``,
    ``transform.t``): resuming must not run code from the run folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        old = directory.with_name(directory.name + ".old")
        if old.is_dir():  # crash between the two renames of save_replay
            directory = old
        else:
            raise FileNotFoundError(f"no replay snapshot at {directory}")
    unsafe = [name for name in _UNSAFE_REPLAY_FILES if (directory / name).exists()]
    if unsafe:
        raise ValueError(
            f"replay snapshot {directory} holds {unsafe}, which loading would unpickle; refusing"
        )
    buffer.loads(directory)


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and ints (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))
