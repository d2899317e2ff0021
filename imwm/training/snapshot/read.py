"""Reading a replay snapshot (:mod:`imwm.training.snapshot`) without unpickling: the manifest checked,
every listed file checked (size, sha256, shape, dtype) before it is used, then the buffer filled."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import torch
from tensordict import TensorDict

from imwm.training.snapshot.format import (
    CHUNK, DTYPES, FORMAT, MANIFEST, MAX_MANIFEST_BYTES, STATE_FILES, TORCHRL_MARKERS, VERSION,
    SnapshotError, check_byte_order, check_manifest, check_storage_kind, key_tuple,
)

__all__ = ["load_replay", "read_replay_tag"]


def read_replay_tag(directory: str | os.PathLike) -> str | None:
    """The ``tag`` of the snapshot in ``directory``, or None without a readable manifest.

    Cheap: reads ``manifest.json`` only (no hashing, no data files).

    Example:
        >>> import tempfile
        >>> from imwm.training.build_replay import build_replay
        >>> from imwm.training.snapshot import save_replay
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
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
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
        >>> from imwm.training.snapshot import save_replay
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
    check_byte_order()
    manifest_path = directory / MANIFEST
    manifest = _read_manifest(directory, manifest_path)
    entries = check_manifest(manifest, manifest_path)
    storage_entry = manifest["storage"]
    storage = buffer.storage
    check_storage_kind(storage)
    _check_storage_size(storage, storage_entry, manifest_path)

    states, tensors = _read_files(directory, entries)
    td = _assemble(storage_entry, tensors, manifest_path) if storage_entry["initialized"] else None
    _check_storage_fits(storage, td, manifest_path)
    generator = _generator(states["buffer"], directory / STATE_FILES["buffer"])

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
        present = [name for name in TORCHRL_MARKERS if (directory / name).exists()]
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
    if info.st_size > MAX_MANIFEST_BYTES:
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
                n = f.readinto(raw[done:min(done + CHUNK, expected)])
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
    tensor = torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]])
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
    mine = {key_tuple(k): v
            for k, v in storage._storage.items(include_nested=True, leaves_only=True)}
    theirs = {key_tuple(k): v for k, v in td.items(include_nested=True, leaves_only=True)}
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
                directory / STATE_FILES[kind],
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
