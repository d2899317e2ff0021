"""What a replay snapshot is (:mod:`imwm.training.snapshot`): its names and numbers, its one error,
and the checks a manifest must pass before any file it lists is opened."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import torch

from imwm.errors import UserError, is_integer

__all__ = ["FORMAT", "VERSION", "MANIFEST", "STATE_FILES", "CHUNK", "DTYPES", "MAX_MANIFEST_BYTES", "TORCHRL_MARKERS",
           "SnapshotError", "check_byte_order", "check_storage_kind", "key_tuple", "check_manifest"]

FORMAT = "imwm-replay-snapshot"
VERSION = 1
MANIFEST = "manifest.json"
STATE_FILES = {"buffer": "buffer.pt", "writer": "writer.pt", "sampler": "sampler.pt"}
CHUNK = 64 << 20  # bytes per read / write / hash step
MAX_MANIFEST_BYTES = 64 << 20
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Every dtype a storage leaf may have; anything else in a manifest is refused.
DTYPES = {
    name: getattr(torch, name)
    for name in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32",
                 "uint64", "float16", "bfloat16", "float32", "float64", "complex64",
                 "complex128")
    if isinstance(getattr(torch, name, None), torch.dtype)
}

# Files of TorchRL's ``ReplayBuffer.dumps`` layout: their presence without a manifest means an
# old-format snapshot.
TORCHRL_MARKERS = ("buffer_metadata.json", "storage", "sampler", "writer", "prefetch.pkl",
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


def check_byte_order() -> None:
    if sys.byteorder != "little":
        raise RuntimeError("replay snapshots store little-endian bytes; this host is big-endian")


def check_storage_kind(storage) -> None:
    from torchrl.data.replay_buffers.storages import TensorStorage  # noqa: PLC0415

    if not isinstance(storage, TensorStorage):
        raise TypeError(
            f"replay snapshots support TensorStorage / LazyTensorStorage, got "
            f"{type(storage).__name__}"
        )


def key_tuple(key) -> tuple[str, ...]:
    return tuple(str(k) for k in ((key,) if isinstance(key, str) else key))


def _int_list(x) -> bool:
    return isinstance(x, list) and all(is_integer(v, 0) for v in x)


def check_manifest(manifest: dict, path: Path) -> list[dict]:
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
    for kind in STATE_FILES:
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
    if not isinstance(kind, str) or kind not in STATE_FILES:  # a list or object is not even hashable
        return f"file {name} has an unknown kind {kind!r}"
    if name != STATE_FILES[kind]:
        return f"file {name} has kind {kind!r}, which must be named {STATE_FILES[kind]}"
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
    if not isinstance(dtype, str) or dtype not in DTYPES:
        return f"file {name}: dtype {dtype!r} is not allowed"
    if not _int_list(shape) or not shape:
        return f"file {name}: 'shape' is not a non-empty list of integers >= 0"
    if shape[: len(st["batch_size"])] != st["batch_size"]:
        return (f"file {name}: shape {shape} does not start with the storage batch size "
                f"{st['batch_size']}")
    itemsize = DTYPES[dtype].itemsize
    if math.prod(shape) * itemsize != entry["bytes"]:
        return (f"file {name}: shape {shape} x {itemsize} bytes ({dtype}) is not "
                f"{entry['bytes']} bytes")
    return None


def _str_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)
