"""Replay snapshots in a format imwm writes and reads itself, with no unpickling.

TorchRL's ``ReplayBuffer.dumps`` / ``loads`` save a buffer as memory-mapped tensors plus JSON,
but ``loads`` also unpickles (``prefetch.pkl``) and ``torch.load``-s without ``weights_only``
(``transform.t``), so a file planted in a run folder runs code on resume; a truncated storage
file is accepted too (its missing records read as zeros). This module replaces them.

A snapshot is one folder::

    manifest.json                 written last, atomically: lists every other file
    tensor000-observation.bin     one raw file per storage leaf (nested keys possible)
    tensor001-reward.bin          ...
    buffer.pt                     buffer generator state, batch size (torch.save of plain data)
    writer.pt                     writer state: round-robin cursor, write count, streams
    sampler.pt                    sampler state: visit counts, signals, trend gate, ...

A tensor file holds a storage leaf of shape ``[capacity, *feature]`` as its raw little-endian
bytes (C order, any dtype, ``bool`` as one byte). The three ``.pt`` files hold only tensors,
numbers, strings, lists and dicts, so ``torch.load(weights_only=True)`` reads them.
``manifest.json`` names the format and version, the caller's ``tag`` (pairs the snapshot with a
checkpoint), the storage length, capacity and tensordict batch sizes, and for every file its
name, storage key (tensors), shape, dtype, byte size and sha256.

Loading reads the manifest (plain JSON), checks every listed file before it is used (regular
file, byte size, sha256, ``prod(shape) * itemsize == size``, dtype in an allow-list), reads
tensors as raw bytes and state files with ``torch.load(weights_only=True)``, then fills the
buffer. Files the manifest does not list are never opened. A folder written by TorchRL's
``dumps`` (no manifest) is refused: reading it would need unpickling.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, is_tensor_collection

from imwm.errors import UserError, is_integer

__all__ = ["SnapshotError", "load_replay", "read_replay_tag", "save_replay"]

FORMAT = "imwm-replay-snapshot"
VERSION = 1
MANIFEST = "manifest.json"
_STATE_FILES = {"buffer": "buffer.pt", "writer": "writer.pt", "sampler": "sampler.pt"}
_CHUNK = 64 << 20  # bytes per read / write / hash step
_MAX_MANIFEST_BYTES = 64 << 20
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Every dtype a storage leaf may have; anything else in a manifest is refused.
_DTYPES = {
    name: getattr(torch, name)
    for name in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32",
                 "uint64", "float16", "bfloat16", "float32", "float64", "complex64",
                 "complex128")
    if isinstance(getattr(torch, name, None), torch.dtype)
}
# Files of TorchRL's ``ReplayBuffer.dumps`` layout: their presence without a manifest means an
# old-format snapshot.
_TORCHRL_MARKERS = ("buffer_metadata.json", "storage", "sampler", "writer", "prefetch.pkl",
                    "transform.t", "rng_state")


class SnapshotError(UserError, ValueError):
    """A replay snapshot file is missing, damaged, unsafe or does not fit the buffer.

    The message is one line naming the file's full path and what is wrong with it.

    Example:
        >>> err = SnapshotError("replay/buffer.pt", "12 bytes, manifest says 40 (truncated?)")
        >>> str(err), isinstance(err, ValueError)
        ('replay snapshot file replay/buffer.pt: 12 bytes, manifest says 40 (truncated?)', True)
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause says
        super().__init__(f"replay snapshot file {self.path}: {self.problem}")


# ------------------------------------------------------------------------------------------ save
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
    _check_byte_order()
    directory = Path(directory)
    storage = buffer.storage
    _check_storage_kind(storage)
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


def _check_byte_order() -> None:
    if sys.byteorder != "little":
        raise RuntimeError("replay snapshots store little-endian bytes; this host is big-endian")


def _create_empty_folder(directory: Path) -> None:
    if directory.exists() or directory.is_symlink():
        if not directory.is_dir() or directory.is_symlink():
            raise FileExistsError(f"cannot write a replay snapshot to {directory}: not a folder")
        if any(directory.iterdir()):
            raise FileExistsError(f"cannot write a replay snapshot into non-empty {directory}")
    directory.mkdir(parents=True, exist_ok=True)


def _check_storage_kind(storage) -> None:
    from torchrl.data.replay_buffers.storages import TensorStorage  # noqa: PLC0415

    if not isinstance(storage, TensorStorage):
        raise TypeError(
            f"replay snapshots support TensorStorage / LazyTensorStorage, got "
            f"{type(storage).__name__}"
        )


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
                raise ValueError(f"replay leaf {_key_tuple(key)} holds a NaN or infinity in rows {a}..{b - 1}; "
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
        {"key": list(_key_tuple(key)), "batch_size": list(value.batch_size)}
        for key, value in td.items(include_nested=True) if is_tensor_collection(value)
    ]
    leaves = list(td.items(include_nested=True, leaves_only=True))
    files = [_save_leaf(directory, i, _key_tuple(key), leaf, rows)
             for i, (key, leaf) in enumerate(leaves)]
    return storage_entry, files


def _save_leaf(directory: Path, index: int, key: tuple[str, ...], leaf, rows: list[tuple[int, int]]) -> dict[str, Any]:
    if not isinstance(leaf, torch.Tensor) or is_tensor_collection(leaf):
        raise TypeError(
            f"storage leaf {key} is a {type(leaf).__name__}, not a tensor; "
            f"save_replay only stores tensors"
        )
    dtype = str(leaf.dtype).removeprefix("torch.")
    if dtype not in _DTYPES:
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
    return [_write_listed_file(directory, _STATE_FILES[kind],
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


def _key_tuple(key) -> tuple[str, ...]:
    return tuple(str(k) for k in ((key,) if isinstance(key, str) else key))


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
    zeros = bytes(min(n, _CHUNK))
    for start in range(0, n, _CHUNK):
        yield memoryview(zeros)[:min(_CHUNK, n - start)]


def _tensor_chunks(tensor: torch.Tensor):
    """Raw bytes of ``tensor`` (C order, native = little-endian), in chunks, without a copy of
    the whole tensor on CPU storages."""
    flat = tensor.detach().resolve_conj().resolve_neg().to("cpu").contiguous().view(-1)
    raw = memoryview(flat.view(torch.uint8).numpy())
    for start in range(0, len(raw), _CHUNK):
        yield raw[start:start + _CHUNK]


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


# ------------------------------------------------------------------------------------------ read
def read_replay_tag(directory: str | os.PathLike) -> str | None:
    """The ``tag`` of the snapshot in ``directory``, or None without a readable manifest.

    Cheap: reads ``manifest.json`` only (no hashing, no data files).

    Example:
        >>> import tempfile
        >>> from imwm.training.build_replay import build_replay
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     empty = read_replay_tag(tmp)  # no manifest: not a snapshot
        ...     rb = build_replay(capacity=8, batch_size=1, batch_length=2)
        ...     _ = save_replay(rb, Path(tmp) / "r", tag="5-ab")
        ...     tag = read_replay_tag(Path(tmp) / "r")
        >>> empty, tag
        (None, '5-ab')
    """
    path = Path(directory) / MANIFEST
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MANIFEST_BYTES:
            return None
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or manifest.get("version") != VERSION or not isinstance(manifest.get("tag"), str)):
        return None
    return manifest["tag"]


def load_replay(buffer, directory: str | os.PathLike) -> str:
    """Restores a buffer written by :func:`save_replay`; never unpickles anything.

    Every file the manifest lists is checked (regular file, byte size, sha256, shape and dtype)
    before its contents are used; state files are read with ``torch.load(weights_only=True)``,
    tensors as raw bytes; other files in the folder are never opened. Afterwards ``len(buffer)``,
    the storage contents, the sampler state, the writer's next write positions and the buffer's
    generator equal those of the saved buffer.

    Args:
        buffer: a buffer built like the saved one (same capacity, writer and sampler kinds),
            typically fresh. On :class:`SnapshotError` it is left as it was, so another
            (older) snapshot can be tried on it.
        directory: a folder written by :func:`save_replay`.

    Returns:
        The snapshot's ``tag``.

    Raises:
        FileNotFoundError: ``directory`` is not a folder.
        SnapshotError: a file is missing, truncated, corrupt, unsafe or does not fit the
            buffer, or the folder is an old TorchRL ``dumps`` snapshot (no ``manifest.json``).

    Example:
        >>> import tempfile
        >>> from tensordict import TensorDict
        >>> from imwm.training.build_replay import build_replay
        >>> rb = build_replay(capacity=16, batch_size=2, batch_length=4, seed=0)
        >>> _ = rb.extend(TensorDict({"traj_ids": torch.zeros(10, dtype=torch.long),
        ...                          "observation": torch.rand(10, 3)}, [10]))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = save_replay(rb, Path(tmp) / "replay", tag="step-10")
        ...     fresh = build_replay(capacity=16, batch_size=2, batch_length=4, seed=1)
        ...     tag = load_replay(fresh, Path(tmp) / "replay")
        >>> tag, len(fresh), torch.equal(fresh[:10]["observation"], rb[:10]["observation"])
        ('step-10', 10, True)
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no replay snapshot at {directory}")
    _check_byte_order()
    manifest_path = directory / MANIFEST
    manifest = _read_manifest(directory, manifest_path)
    entries = _check_manifest(manifest, manifest_path)
    storage_entry = manifest["storage"]
    storage = buffer.storage
    _check_storage_kind(storage)
    _check_storage_size(storage, storage_entry, manifest_path)

    states, tensors = _read_files(directory, entries)
    td = _assemble(storage_entry, tensors, manifest_path) if storage_entry["initialized"] else None
    _check_storage_fits(storage, td, manifest_path)
    generator = _generator(states["buffer"], directory / _STATE_FILES["buffer"])

    # Every check passed and everything is read: install. The states go first, each undone if a
    # later one does not fit, so a SnapshotError leaves the buffer as it was (the caller may try
    # an older snapshot); the storage and the generator, which cannot fail now, go last.
    lock = getattr(buffer, "_replay_lock", None) or contextlib.nullcontext()
    with lock:
        _load_states(buffer, states, directory)
        _install_storage(storage, storage_entry, td)
        _restore_buffer_settings(buffer, states["buffer"], generator)
    return manifest["tag"]


def _read_manifest(directory: Path, path: Path) -> dict:
    if not (path.exists() or path.is_symlink()):
        present = [name for name in _TORCHRL_MARKERS if (directory / name).exists()]
        if present:
            raise SnapshotError(
                path,
                f"missing: {directory} is an old-format (TorchRL ReplayBuffer.dumps) replay "
                f"snapshot (holds {', '.join(present)}); loading it would need unpickling, so it "
                f"cannot be loaded safely. Start the replay afresh or re-save it with a trusted "
                f"older version",
            )
        raise SnapshotError(path, "missing: not a replay snapshot (no manifest)")
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise SnapshotError(path, "not a regular file")
    if info.st_size > _MAX_MANIFEST_BYTES:
        raise SnapshotError(path, f"{info.st_size} bytes, too large for a manifest")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise SnapshotError(path, "not a JSON object")
    if manifest.get("format") != FORMAT:
        raise SnapshotError(path, f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise SnapshotError(path, f"format version {manifest.get('version')!r}, this code reads "
                                  f"version {VERSION}")
    return manifest


def _int_list(x) -> bool:
    return isinstance(x, list) and all(is_integer(v, 0) for v in x)


def _check_manifest(manifest: dict, path: Path) -> list[dict]:
    """Validates the manifest's structure; returns its file entries."""
    problem = (_header_problem(manifest)
               or _storage_problem(manifest.get("storage"))
               or _files_problem(manifest.get("files"), manifest["storage"]))
    if problem:
        raise SnapshotError(path, problem)
    return manifest["files"]


# Each ``_..._problem`` below returns the first thing wrong with its part of the manifest, or
# None; the checks run in order, so that each one can rely on the fields checked before it.
def _header_problem(manifest: dict) -> str | None:
    if not isinstance(manifest.get("tag"), str):
        return "'tag' is not a string"
    if manifest.get("byte_order", "little") != "little":
        return f"byte order {manifest.get('byte_order')!r}, expected 'little'"
    return None


def _storage_problem(st) -> str | None:
    if not isinstance(st, dict):
        return "'storage' is not an object"
    if not isinstance(st.get("initialized"), bool):
        return "'storage.initialized' is not a boolean"
    for field in ("length", "capacity", "ndim"):
        if not is_integer(st.get(field), 0):
            return f"'storage.{field}' is not an integer >= 0"
    if st["length"] > st["capacity"]:
        return f"storage length {st['length']} exceeds its capacity {st['capacity']}"
    if not st["initialized"]:
        if st["length"]:
            return f"storage length {st['length']} but the storage is not initialised"
        return None
    if not _int_list(st.get("batch_size")) or not st["batch_size"]:
        return "'storage.batch_size' is not a list of integers"
    if st["batch_size"][0] != st["capacity"] and st["ndim"] == 1:
        return f"storage batch size {st['batch_size']} does not start with its capacity"
    tds = st.get("tensordicts")
    if not isinstance(tds, list) or not all(
            isinstance(t, dict) and _str_list(t.get("key")) and _int_list(t.get("batch_size"))
            for t in tds):
        return "'storage.tensordicts' is not a list of {key, batch_size}"
    return None


def _files_problem(files, st: dict) -> str | None:
    if not isinstance(files, list):
        return "'files' is not a list"
    names, keys = set(), set()
    for i, entry in enumerate(files):
        problem = _entry_problem(i, entry, names) or _kind_problem(entry, st, keys)
        if problem:
            return problem
        names.add(entry["name"])
        if entry["kind"] == "tensor":
            keys.add(tuple(entry["key"]))
    kinds = [entry["kind"] for entry in files]
    for kind in _STATE_FILES:
        if kinds.count(kind) != 1:
            return f"lists {kinds.count(kind)} {kind} state files, expected 1"
    return None


def _entry_problem(i: int, entry, names: set[str]) -> str | None:
    """What is wrong with the fields every file entry has; ``names``: those listed before."""
    if not isinstance(entry, dict):
        return f"files[{i}] is not an object"
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith(MANIFEST):
        return f"files[{i}] has an unsafe or invalid name {name!r}"
    if name in names:
        return f"file {name} listed twice"
    if not is_integer(entry.get("bytes"), 0):
        return f"file {name}: 'bytes' is not an integer >= 0"
    if not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"]):
        return f"file {name}: 'sha256' is not 64 lowercase hex digits"
    return None


def _kind_problem(entry: dict, st: dict, keys: set[tuple[str, ...]]) -> str | None:
    name, kind = entry["name"], entry.get("kind")
    if kind == "tensor":
        return _tensor_problem(entry, st, keys)
    if not isinstance(kind, str) or kind not in _STATE_FILES:  # a list or object is not even hashable
        return f"file {name} has an unknown kind {kind!r}"
    if name != _STATE_FILES[kind]:
        return f"file {name} has kind {kind!r}, which must be named {_STATE_FILES[kind]}"
    return None


def _tensor_problem(entry: dict, st: dict, keys: set[tuple[str, ...]]) -> str | None:
    """What is wrong with a storage tensor's entry; ``keys``: the storage keys listed before."""
    name, key = entry["name"], entry.get("key")
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if not st["initialized"]:
        return f"file {name} is a storage tensor but the storage is not initialised"
    if not _str_list(key) or not key:
        return f"file {name}: 'key' is not a non-empty list of strings"
    if tuple(key) in keys:
        return f"storage key {key} listed twice"
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        return f"file {name}: dtype {dtype!r} is not allowed"
    if not _int_list(shape) or not shape:
        return f"file {name}: 'shape' is not a non-empty list of integers >= 0"
    if shape[: len(st["batch_size"])] != st["batch_size"]:
        return (f"file {name}: shape {shape} does not start with the storage batch size "
                f"{st['batch_size']}")
    itemsize = _DTYPES[dtype].itemsize
    if math.prod(shape) * itemsize != entry["bytes"]:
        return (f"file {name}: shape {shape} x {itemsize} bytes ({dtype}) is not "
                f"{entry['bytes']} bytes")
    return None


def _str_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


def _check_storage_size(storage, storage_entry: dict, manifest_path: Path) -> None:
    if storage_entry["capacity"] != int(storage.max_size):
        raise SnapshotError(manifest_path, f"snapshot capacity {storage_entry['capacity']}, "
                                           f"this buffer's storage holds {storage.max_size}")
    if storage_entry["ndim"] != int(getattr(storage, "ndim", 1)):
        raise SnapshotError(manifest_path, f"snapshot storage ndim {storage_entry['ndim']}, "
                                           f"this buffer's {getattr(storage, 'ndim', 1)}")


def _read_files(directory: Path, entries: list[dict]) -> tuple[dict[str, dict], list]:
    """The state files' dicts by kind, and (entry, tensor) pairs of the storage tensors."""
    # A missing, linked or wrong-sized file anywhere is refused before any file is read in full.
    for entry in entries:
        _check_stat(directory / entry["name"], entry["bytes"])
    states = {entry["kind"]: _read_state(directory / entry["name"], entry)
              for entry in entries if entry["kind"] != "tensor"}
    tensors = [(entry, _read_tensor(directory / entry["name"], entry))
               for entry in entries if entry["kind"] == "tensor"]
    return states, tensors


def _check_stat(path: Path, expected: int) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise SnapshotError(path, "missing (listed in the manifest)") from None
    except OSError as exc:
        raise SnapshotError(path, f"cannot be read ({exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SnapshotError(path, "not a regular file (links and devices are refused)")
    if info.st_size != expected:
        hint = "truncated?" if info.st_size < expected else "extra bytes?"
        raise SnapshotError(path, f"{info.st_size} bytes, manifest says {expected} ({hint})")


def _read_into(path: Path, raw: memoryview, entry: dict) -> None:
    """Fills ``raw`` from the file, checking its size and sha256 against ``entry``."""
    digest = hashlib.sha256()
    expected = entry["bytes"]
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SnapshotError(path, "not a regular file")
            done = 0
            while done < expected:
                n = f.readinto(raw[done:min(done + _CHUNK, expected)])
                if not n:
                    raise SnapshotError(path, f"{done} bytes, manifest says {expected} "
                                              f"(truncated?)")
                digest.update(raw[done:done + n])
                done += n
            if f.read(1):
                raise SnapshotError(path, f"more than {expected} bytes, manifest says "
                                          f"{expected} (extra bytes?)")
    except OSError as exc:
        raise SnapshotError(path, f"cannot be read ({exc})") from exc
    if digest.hexdigest() != entry["sha256"]:
        raise SnapshotError(path, f"sha256 {digest.hexdigest()} does not match the manifest's "
                                  f"{entry['sha256']} (corrupted?)")


def _read_tensor(path: Path, entry: dict) -> torch.Tensor:
    tensor = torch.empty(entry["shape"], dtype=_DTYPES[entry["dtype"]])
    if entry["bytes"]:
        _read_into(path, memoryview(tensor.view(-1).view(torch.uint8).numpy()), entry)
    else:
        _read_into(path, memoryview(bytearray(0)), entry)
    return tensor


def _read_state(path: Path, entry: dict) -> dict:
    raw = bytearray(entry["bytes"])
    _read_into(path, memoryview(raw), entry)
    try:
        state = torch.load(io.BytesIO(bytes(raw)), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - refused by the weights-only unpickler, or damaged
        raise SnapshotError(path, f"not a weights-only torch file ({type(exc).__name__}: "
                                  f"{exc})") from exc
    if not isinstance(state, dict):
        raise SnapshotError(path, f"holds a {type(state).__name__}, expected a dict")
    return state


def _assemble(storage_entry: dict, tensors, manifest_path: Path) -> TensorDict:
    td = TensorDict({}, batch_size=storage_entry["batch_size"])
    try:
        for sub in sorted(storage_entry["tensordicts"], key=lambda t: len(t["key"])):
            td.set(tuple(sub["key"]), TensorDict({}, batch_size=sub["batch_size"]))
        for entry, tensor in tensors:
            td.set(tuple(entry["key"]), tensor)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(manifest_path, f"storage layout is inconsistent "
                                           f"({type(exc).__name__}: {exc})") from exc
    return td


def _check_storage_fits(storage, td: TensorDict | None, manifest_path: Path) -> None:
    """An already-filled storage is refilled in place: it must have the same leaves."""
    if td is None or not storage.initialized or storage._storage is None:
        return
    mine = {_key_tuple(k): v
            for k, v in storage._storage.items(include_nested=True, leaves_only=True)}
    theirs = {_key_tuple(k): v for k, v in td.items(include_nested=True, leaves_only=True)}
    if set(mine) != set(theirs) or any(
            mine[k].shape != v.shape or mine[k].dtype != v.dtype for k, v in theirs.items()):
        raise SnapshotError(manifest_path, "storage keys, shapes or dtypes differ from this "
                                           "buffer's already-filled storage")


def _install_storage(storage, storage_entry: dict, td: TensorDict | None) -> None:
    """Puts the loaded data in ``storage`` (like TorchRL's storage checkpointer ``loads``)."""
    if td is None:  # nothing was ever written
        if storage.initialized:
            storage._empty()
        storage._len = 0
        return
    if storage.initialized and storage._storage is not None:  # same leaves: checked before
        dest = storage._storage
        for key, value in td.items(include_nested=True, leaves_only=True):
            dest.get(key).copy_(value)
    else:
        device = storage.device
        if device == "auto":
            device = storage.device = torch.device("cpu")
        storage._storage = td.to(device)
        storage.initialized = True
    storage._len = int(storage_entry["length"])
    if hasattr(storage, "_bump_mutation_revision"):
        storage._bump_mutation_revision()


def _load_states(buffer, states: dict[str, dict], directory: Path) -> None:
    """Loads the sampler, writer and transform states; if one does not fit, puts back those
    loaded before it and raises."""
    components = [("sampler", "sampler", buffer.sampler, states["sampler"]),
                  ("writer", "writer", buffer.writer, states["writer"])]
    if states["buffer"].get("transform"):
        components.append(("buffer", "transform", buffer.transform,
                           states["buffer"]["transform"]))
    done = []
    for kind, what, component, state in components:
        previous = component.state_dict()
        try:
            component.load_state_dict(state)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
            for component_done, state_done in [(component, previous)] + done[::-1]:
                with contextlib.suppress(Exception):
                    component_done.load_state_dict(state_done)
            raise SnapshotError(
                directory / _STATE_FILES[kind],
                f"{what} state does not fit this buffer's {type(component).__name__} "
                f"({type(exc).__name__}: {exc})",
            ) from exc
        done.append((component, previous))


def _restore_buffer_settings(buffer, buffer_state: dict, generator) -> None:
    if "batch_size" in buffer_state:
        buffer._batch_size = buffer_state["batch_size"]
    if "consume_after_n_samples" in buffer_state and hasattr(buffer, "_consume_after_n_samples"):
        buffer._consume_after_n_samples = buffer_state["consume_after_n_samples"]
    if generator is not None:
        buffer.set_rng(generator)


def _generator(state: dict, path: Path) -> torch.Generator | None:
    """The buffer's saved generator, rebuilt (None when the buffer had none)."""
    if state.get("rng_state") is None:
        return None
    try:
        generator = torch.Generator(device=state.get("rng_device") or "cpu")
        generator.set_state(state["rng_state"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SnapshotError(path, f"invalid generator state ({type(exc).__name__}: {exc})") from exc
    return generator
