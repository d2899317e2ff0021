"""Checkpoints that run no code, hold nothing non-finite and survive a kill at any moment.

A checkpoint is ``torch.save`` of a plain dict of tensors, numbers, strings, lists and dicts, read
back with ``torch.load(weights_only=True)``, so a file planted in a run folder cannot run code.
Before anything is written the state is scanned: a NaN or infinity anywhere outside ``config``
(which may hold ``inf`` on purpose) refuses the write, naming the entry, so a diverged model
never replaces a good checkpoint.

A training run keeps two *generations*, each a checkpoint paired with a replay snapshot
(:mod:`imwm.training.snapshot`, our own checksummed format) through a shared tag::

    checkpoints/latest.pt    <->  replay/            (newest)
    checkpoints/previous.pt  <->  replay.previous/   (the one before)

:meth:`RunCheckpoint.save` writes the new pair under temporary names, then publishes it by
renames (replay first, checkpoint second), so a kill between any two steps leaves at least one
complete, matching pair; :meth:`RunCheckpoint.restore` takes the newest checkpoint that loads and
whose replay snapshot verifies, falling back to the previous pair with a one-line warning.

Example:
    >>> import tempfile, torch
    >>> tmp = tempfile.TemporaryDirectory(); folder = tmp.name
    >>> path = save_checkpoint(f"{folder}/latest.pt", {"w": torch.ones(2), "step": 3})
    >>> load_checkpoint(path)["step"]
    3
    >>> save_checkpoint(f"{folder}/latest.pt", {"w": torch.tensor([float("nan")])})
    Traceback (most recent call last):
    ...
    imwm.training.checkpoint.CheckpointError: refusing to write .../latest.pt: non-finite values in w
    >>> tmp.cleanup()
"""
from __future__ import annotations

import os
import random
import shutil
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imwm.errors import UserError

__all__ = [
    "CheckpointError",
    "RunCheckpoint",
    "nonfinite_entries",
    "save_checkpoint",
    "load_checkpoint",
    "load_latest",
    "rng_state",
    "set_rng_state",
]

LATEST = "latest.pt"
PREVIOUS = "previous.pt"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be written or read; the message is one line naming the file.

    Example:
        >>> load_checkpoint("no/such/run/latest.pt")
        Traceback (most recent call last):
        ...
        imwm.training.checkpoint.CheckpointError: no/such/run/latest.pt: no checkpoint file
    """


def nonfinite_entries(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of every floating tensor or float in ``state`` holding a NaN or infinity.

    Example:
        >>> nonfinite_entries({"a": {"w": torch.tensor([1.0, float("inf")])}, "b": [0.5, float("nan")]})
        ['a.w', 'b.1']
    """
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return [] if bool(torch.isfinite(state).all()) else [prefix]
        return []
    if isinstance(state, float):
        return [] if np.isfinite(state) else [prefix]
    if isinstance(state, dict):
        items: Iterable = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    bad = []
    for key, value in items:
        bad += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return bad


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked_entries(state: dict) -> list[str]:
    # A config may hold infinities on purpose (``replay.curious.initial: inf``); only the state
    # a run learned or counted is checked.
    return nonfinite_entries({k: v for k, v in state.items() if k != "config"})


def _write_tmp(path: Path, state: dict) -> Path:
    bad = _checked_entries(state)
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise CheckpointError(f"refusing to write {path}: non-finite values in {shown}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:  # durable before a rename publishes it
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {tmp}: {_one_line(err)}") from err
    return tmp


def save_checkpoint(path: str | os.PathLike, state: dict, *, keep_previous: bool = True) -> Path:
    """Writes ``state`` to ``path`` atomically after checking that every value is finite.

    The file is written to ``<path>.tmp`` and moved into place with ``os.replace``; the file it
    replaces becomes ``previous.pt`` beside it (``keep_previous``), which :func:`load_latest`
    falls back to when the newest file is unreadable.

    Args:
        path: destination, e.g. ``runs/x/checkpoints/latest.pt``.
        state: plain dict (tensors, numbers, strings, lists, dicts, None).
        keep_previous: keep the replaced file as ``previous.pt``.

    Raises:
        CheckpointError: a non-finite value (nothing is written) or a failed write.
    """
    path = Path(path)
    tmp = _write_tmp(path, state)
    if keep_previous and path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    required: Iterable[str] = ()) -> dict:
    """Reads a checkpoint with ``torch.load(weights_only=True)`` (no code from the file runs).

    Raises:
        CheckpointError: one line naming the file: missing, unreadable (empty, truncated,
            corrupt, or holding objects other than tensors and plain data), lacking one of the
            ``required`` keys, or holding non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt zip/pickle
        raise CheckpointError(f"{path}: unreadable checkpoint ({_one_line(err)})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks keys {missing}")
    bad = _checked_entries(state)
    if bad:
        raise CheckpointError(f"{path}: checkpoint holds non-finite values in {', '.join(bad[:4])}")
    return state


def load_latest(directory: str | os.PathLike, *, required: Iterable[str] = (),
                map_location: str | torch.device = "cpu") -> tuple[Path, dict]:
    """``latest.pt`` in ``directory``, or ``previous.pt`` (with a warning) when it is unreadable.

    Returns:
        ``(path, state)`` of the file that loaded.

    Raises:
        CheckpointError: neither file loads; the message names both reasons.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = save_checkpoint(f"{tmp}/latest.pt", {"step": 1})
        ...     _ = save_checkpoint(f"{tmp}/latest.pt", {"step": 2})  # step 1 moves to previous.pt
        ...     _ = Path(tmp, "latest.pt").write_bytes(b"")  # the newest file is damaged
        ...     with warnings.catch_warnings(record=True) as caught:
        ...         warnings.simplefilter("always")
        ...         path, state = load_latest(tmp)
        >>> path.name, state["step"], str(caught[0].message).endswith("previous.pt instead")
        ('previous.pt', 1, True)
    """
    directory = Path(directory)
    reasons = []
    for name in (LATEST, PREVIOUS):
        path = directory / name
        if not path.exists() and name == PREVIOUS and not reasons:
            break
        try:
            state = load_checkpoint(path, required=required, map_location=map_location)
        except CheckpointError as err:
            reasons.append(str(err))
            continue
        if reasons:
            warnings.warn(f"{reasons[0]}; using {path} instead", stacklevel=2)
        return path, state
    raise CheckpointError("; ".join(reasons) or f"{directory}: no checkpoint")


class RunCheckpoint:
    """The checkpoint/replay generations of one training run folder (see the module docstring).

    Args:
        run_dir: the run folder; checkpoints go to ``run_dir/checkpoints``, replay snapshots to
            ``run_dir/replay`` and ``run_dir/replay.previous``.
        required: keys a checkpoint must hold to be used.

    Example:
        >>> import tempfile
        >>> from imwm.training.build_replay import build_replay
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run = RunCheckpoint(tmp, required=["step"])
        ...     _ = run.save({"step": 5, "counters": {"env_steps": 5}},
        ...                  build_replay(capacity=8, batch_size=1, batch_length=2))
        ...     path, state = run.restore(build_replay(capacity=8, batch_size=1, batch_length=2))
        >>> path.name, state["step"], state["replay_tag"].startswith("5-")
        ('latest.pt', 5, True)
    """

    def __init__(self, run_dir: str | os.PathLike, *, required: Iterable[str] = ()):
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.latest = self.ckpt_dir / LATEST
        self.previous = self.ckpt_dir / PREVIOUS
        self.replay = self.run_dir / "replay"
        self.replay_previous = self.run_dir / "replay.previous"
        self.replay_tmp = self.run_dir / "replay.tmp"
        self.required = tuple(required)

    def exists(self) -> bool:
        """Whether the folder holds any checkpoint (readable or not)."""
        return self.latest.exists() or self.previous.exists()

    def candidates(self) -> tuple[list[tuple[Path, dict]], list[str]]:
        """Readable checkpoints, newest first, and one line per unreadable one."""
        found, reasons = [], []
        for path in (self.latest, self.previous):
            if not path.exists():
                if path == self.latest and self.previous.exists():  # killed mid-publish
                    reasons.append(f"{path}: missing")
                continue
            try:
                found.append((path, load_checkpoint(path, required=self.required)))
            except CheckpointError as err:
                reasons.append(str(err))
        return found, reasons

    def save(self, state: dict, buffer) -> Path:
        """Writes a new generation: replay snapshot and checkpoint, published by renames.

        Raises:
            CheckpointError: non-finite values in ``state`` or in the replay's written records
                (nothing is written) or a failed write.
        """
        from imwm.training.snapshot import save_replay

        tag = f"{state.get('counters', {}).get('env_steps', 0)}-{uuid.uuid4().hex[:12]}"
        state = {**state, "replay_tag": tag}
        if _checked_entries(state):  # refuse before the (large) replay is written
            _write_tmp(self.latest, state)
        if self.replay_tmp.exists():
            shutil.rmtree(self.replay_tmp)
        try:
            save_replay(buffer, self.replay_tmp, tag=tag)
        except OSError as err:  # a full disk, a read-only folder: the last generation stays
            shutil.rmtree(self.replay_tmp, ignore_errors=True)
            raise CheckpointError(f"cannot write {self.replay_tmp}: {_one_line(err)}") from err
        except ValueError as err:  # non-finite replay records, refused before anything was written
            raise CheckpointError(str(err)) from err
        tmp = _write_tmp(self.latest, state)
        # Publish. Each generation is found by its tag, so any prefix of these renames leaves
        # one matching pair among latest/previous and replay/replay.previous.
        if self.replay_previous.exists():
            shutil.rmtree(self.replay_previous)
        if self.replay.exists():
            os.replace(self.replay, self.replay_previous)
        os.replace(self.replay_tmp, self.replay)
        if self.latest.exists():
            os.replace(self.latest, self.previous)
        os.replace(tmp, self.latest)
        _fsync_dir(self.ckpt_dir)
        _fsync_dir(self.run_dir)
        return self.latest

    def _replay_for(self, tag: str | None) -> Path | None:
        from imwm.training.snapshot import read_replay_tag

        for directory in (self.replay, self.replay_previous, self.replay_tmp):
            if tag is not None and directory.is_dir() and read_replay_tag(directory) == tag:
                return directory
        return None

    def restore(self, buffer, candidates: list[tuple[Path, dict]] | None = None,
                reasons: list[str] | None = None) -> tuple[Path, dict]:
        """Loads the newest checkpoint whose replay snapshot verifies; fills ``buffer``.

        Args:
            buffer: the freshly built replay buffer to fill.
            candidates, reasons: the result of :meth:`candidates` when already read.

        Returns:
            ``(path, state)`` of the checkpoint used.

        Raises:
            CheckpointError: no checkpoint/replay pair loads; the message lists every reason.
        """
        from imwm.training.snapshot import SnapshotError, load_replay

        if candidates is None:
            candidates, reasons = self.candidates()
        reasons = list(reasons or [])
        for path, state in candidates:
            if "replay_tag" not in state:
                reasons.append(f"{path}: written by an older imwm without a replay tag, so its "
                               "replay snapshot cannot be verified; start a new run_dir")
                continue
            directory = self._replay_for(state["replay_tag"])
            if directory is None:
                reasons.append(f"{path}: no replay snapshot with its tag "
                               f"{state.get('replay_tag')!r} in {self.run_dir}")
                continue
            try:
                load_replay(buffer, directory)
            except SnapshotError as err:
                reasons.append(str(err))
                continue
            if reasons:
                warnings.warn(f"{'; '.join(reasons)}; resuming from {path} instead", stacklevel=2)
            return path, state
        raise CheckpointError("cannot resume " + str(self.run_dir) + ": " + "; ".join(reasons))


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and ints (``weights_only``-loadable).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # survives a checkpoint round trip
        ...     path = save_checkpoint(f"{tmp}/latest.pt", {"rng": rng_state()})
        ...     state = load_checkpoint(path)["rng"]
        >>> first = torch.rand(1).item(), np.random.rand(), random.random()
        >>> set_rng_state(state)
        >>> first == (torch.rand(1).item(), np.random.rand(), random.random())
        True
    """
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
    """Inverse of :func:`rng_state`.

    Example:
        >>> draw = lambda: (torch.rand(3).tolist(), np.random.rand(), random.random())
        >>> state = rng_state(); first = draw()
        >>> set_rng_state(state)
        >>> draw() == first
        True
    """
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))
