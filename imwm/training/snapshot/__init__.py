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

from imwm.training.snapshot.format import SnapshotError
from imwm.training.snapshot.read import load_replay, read_replay_tag
from imwm.training.snapshot.write import save_replay

__all__ = ["SnapshotError", "load_replay", "read_replay_tag", "save_replay"]
