"""Writing a replay snapshot (:mod:`imwm.training.snapshot`): every written storage row checked finite,
one raw file per storage leaf, three ``torch.save`` files of plain data, each fsynced, and the
manifest written last, atomically."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, is_tensor_collection

from imwm.training.snapshot.format import (
    CHUNK, DTYPES, FORMAT, MANIFEST, STATE_FILES, VERSION, check_byte_order, check_storage_kind, key_tuple,
)

__all__ = ["save_replay"]


def save_replay(buffer, directory: str | os.PathLike, *, tag: str) -> Path:
    """Writes the complete state of ``buffer`` into the new folder ``directory``.

    Saves the storage (every leaf as raw bytes), its length, the writer, the sampler and the
    buffer's own generator, then ``manifest.json`` last (atomically, fsynced). Every file is
    fsynced. Temporary names and rotation are the caller's business. Rows that hold no record
    (the storage is allocated uninitialised) are saved as zeros; rows that do must be finite.

    Args:
        buffer: a TorchRL replay buffer over a ``LazyTensorStorage`` / ``TensorStorage``
            holding a TensorDict, e.g. one from :func:`imwm.training.build_replay.build_replay`;
            it may be empty (nothing written yet).
        directory: folder to create (parents too); it may exist only if empty.
        tag: free text stored in the manifest, e.g. the checkpoint's env step, so that the
            caller can pair the snapshot with a checkpoint (:func:`read_replay_tag`).

    Returns:
        ``directory`` as a ``Path``.

    Raises:
        FileExistsError: ``directory`` exists and is not an empty folder.
        TypeError: the storage does not hold a TensorDict of tensors, or a state holds
            something ``torch.load(weights_only=True)`` could not read back.
        ValueError: a written row of a floating-point leaf holds a NaN or an infinity (nothing is
            written).

    Example:
        >>> import tempfile
        >>> from imwm.training.build_replay import build_replay
        >>> rb = build_replay(capacity=8, batch_size=1, batch_length=2)
        >>> _ = rb.extend(TensorDict({"traj_ids": torch.zeros(3, dtype=torch.long)}, [3]))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     names = sorted(p.name for p in save_replay(rb, Path(tmp) / "r", tag="3").iterdir())
        >>> names  # doctest: +NORMALIZE_WHITESPACE
        ['buffer.pt', 'manifest.json', 'sampler.pt', 'tensor000-traj_ids.bin',
         'tensor001-index.bin', 'writer.pt']
    """
    if not isinstance(tag, str):
        raise TypeError(f"tag must be a str, got {type(tag).__name__}")
    check_byte_order()
    directory = Path(directory)
    storage = buffer.storage
    check_storage_kind(storage)
    rows = _written_rows(buffer, storage)
    _check_finite_rows(storage, rows)  # before the folder exists: a refused snapshot leaves nothing
    _create_empty_folder(directory)
    storage_entry, files = _save_storage(storage, directory, rows)
    files += _save_states(buffer, directory)
    _write_manifest(directory, {
        "format": FORMAT,
        "version": VERSION,
        "tag": tag,
        "byte_order": "little",
        "storage": storage_entry,
        "writer_class": type(buffer.writer).__name__,
        "sampler_class": type(buffer.sampler).__name__,
        "files": files,
    })
    return directory


def _create_empty_folder(directory: Path) -> None:
    if directory.exists() or directory.is_symlink():
        if not directory.is_dir() or directory.is_symlink():
            raise FileExistsError(f"cannot write a replay snapshot to {directory}: not a folder")
        if any(directory.iterdir()):
            raise FileExistsError(f"cannot write a replay snapshot into non-empty {directory}")
    directory.mkdir(parents=True, exist_ok=True)


def _written_rows(buffer, storage) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of storage rows (along dim 0) that hold records.

    A :class:`~imwm.replay.StreamWriter` fills rings, not a prefix, and knows which rows it wrote;
    other writers fill rows ``0 .. len - 1`` first.
    """
    if not storage.initialized:
        return []
    ranges = getattr(buffer.writer, "written_rows", None)
    if ranges is not None:
        return ranges()
    return [(0, int(storage._len_along_dim0))]


def _check_finite_rows(storage, rows: list[tuple[int, int]]) -> None:
    """A ``ValueError`` naming the first floating-point leaf with a NaN or infinity in ``rows``."""
    td = storage._storage if storage.initialized else None
    if not is_tensor_collection(td):
        return  # nothing written yet, or a storage _save_storage refuses with its own error
    for key, leaf in td.items(include_nested=True, leaves_only=True):
        if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
            continue
        for a, b in rows:
            if not bool(torch.isfinite(leaf[a:b]).all()):
                raise ValueError(f"replay leaf {key_tuple(key)} holds a NaN or infinity in rows {a}..{b - 1}; "
                                 "a replay snapshot is never saved with non-finite records")


def _save_storage(storage, directory: Path, rows: list[tuple[int, int]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Writes one raw file per storage leaf (zeros outside ``rows``); returns the manifest's
    storage entry and those files' entries."""
    initialized = bool(storage.initialized) and storage._storage is not None
    storage_entry: dict[str, Any] = {
        "initialized": initialized,
        "length": int(len(storage)),
        "capacity": int(storage.max_size),
        "ndim": int(getattr(storage, "ndim", 1)),
        "batch_size": None,
        "tensordicts": [],
    }
    if not initialized:  # nothing written yet: no tensor files
        return storage_entry, []
    td = storage._storage
    if not is_tensor_collection(td):
        raise TypeError(
            f"save_replay needs a storage holding a TensorDict, got {type(td).__name__}"
        )
    storage_entry["batch_size"] = list(td.batch_size)
    # A nested TensorDict's batch size is not told by its leaves (an empty one has none).
    storage_entry["tensordicts"] = [
        {"key": list(key_tuple(key)), "batch_size": list(value.batch_size)}
        for key, value in td.items(include_nested=True) if is_tensor_collection(value)
    ]
    leaves = list(td.items(include_nested=True, leaves_only=True))
    files = [_save_leaf(directory, i, key_tuple(key), leaf, rows)
             for i, (key, leaf) in enumerate(leaves)]
    return storage_entry, files


def _save_leaf(directory: Path, index: int, key: tuple[str, ...], leaf, rows: list[tuple[int, int]]) -> dict[str, Any]:
    if not isinstance(leaf, torch.Tensor) or is_tensor_collection(leaf):
        raise TypeError(
            f"storage leaf {key} is a {type(leaf).__name__}, not a tensor; "
            f"save_replay only stores tensors"
        )
    dtype = str(leaf.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise TypeError(f"storage leaf {key} has dtype {leaf.dtype}, not supported")
    name = f"tensor{index:03d}-{_slug(key)}.bin"
    return _write_listed_file(directory, name, _row_chunks(leaf, rows), kind="tensor",
                              key=list(key), shape=list(leaf.shape), dtype=dtype)


def _save_states(buffer, directory: Path) -> list[dict[str, Any]]:
    """Writes the buffer, writer and sampler state files; returns their manifest entries."""
    states = {
        "buffer": _buffer_state(buffer),
        "writer": buffer.writer.state_dict(),
        "sampler": buffer.sampler.state_dict(),
    }
    return [_write_listed_file(directory, STATE_FILES[kind],
                               [_weights_only_bytes(kind, _to_cpu(state))], kind=kind)
            for kind, state in states.items()]


def _write_listed_file(directory: Path, name: str, chunks, *, kind: str, key=None, shape=None,
                       dtype=None) -> dict[str, Any]:
    """Writes the file ``name``; returns its manifest entry."""
    size, digest = _write_file(directory / name, chunks)
    return {"name": name, "kind": kind, "key": key, "shape": shape, "dtype": dtype,
            "bytes": size, "sha256": digest}


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    # Written last and renamed into place: a folder with a manifest is a complete snapshot.
    tmp = directory / (MANIFEST + ".tmp")
    _write_file(tmp, [json.dumps(manifest, indent=1).encode("utf-8")])
    os.replace(tmp, directory / MANIFEST)
    _fsync_dir(directory)


def _slug(key: tuple[str, ...]) -> str:
    text = re.sub(r"[^A-Za-z0-9_]+", "_", ".".join(key)).strip("_")
    return (text or "leaf")[:80]


def _row_chunks(tensor: torch.Tensor, rows: list[tuple[int, int]]):
    """The bytes of ``tensor``'s rows in ``rows`` and zeros for every other row, in row order."""
    row_bytes = tensor[:1].numel() * tensor.element_size()
    start = 0
    for a, b in sorted(rows) + [(tensor.shape[0], tensor.shape[0])]:
        yield from _zero_chunks((a - start) * row_bytes)
        yield from _tensor_chunks(tensor[a:b])
        start = b


def _zero_chunks(n: int):
    zeros = bytes(min(n, CHUNK))
    for start in range(0, n, CHUNK):
        yield memoryview(zeros)[:min(CHUNK, n - start)]


def _tensor_chunks(tensor: torch.Tensor):
    """Raw bytes of ``tensor`` (C order, native = little-endian), in chunks, without a copy of
    the whole tensor on CPU storages."""
    flat = tensor.detach().resolve_conj().resolve_neg().to("cpu").contiguous().view(-1)
    raw = memoryview(flat.view(torch.uint8).numpy())
    for start in range(0, len(raw), CHUNK):
        yield raw[start:start + CHUNK]


def _write_file(path: Path, chunks) -> tuple[int, str]:
    """Writes ``chunks`` to a new file, fsyncs it; returns (byte size, sha256 hex)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "xb") as f:
        for chunk in chunks:
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    return size, digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _buffer_state(buffer) -> dict[str, Any]:
    """What ``ReplayBuffer.dumps`` saves beside storage, sampler and writer (no prefetch queue)."""
    rng = getattr(buffer, "_rng", None)
    state = {
        "batch_size": getattr(buffer, "_batch_size", None),
        "consume_after_n_samples": getattr(buffer, "_consume_after_n_samples", None),
        "rng_state": rng.get_state().clone() if rng is not None else None,
        "rng_device": str(rng.device) if rng is not None else None,
    }
    transform = getattr(buffer, "_transform", None)
    if transform is not None:
        transform_state = transform.state_dict()
        if transform_state:
            state["transform"] = dict(transform_state)
    return state


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _weights_only_bytes(kind: str, state) -> bytes:
    """``torch.save`` of ``state``, checked to load back with ``weights_only=True``."""
    out = io.BytesIO()
    torch.save(state, out)
    payload = out.getvalue()
    try:
        torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the snapshot would not load
        raise TypeError(
            f"the {kind} state holds objects torch.load(weights_only=True) cannot read: {exc}"
        ) from exc
    return payload
