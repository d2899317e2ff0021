"""Valid slice starts of the slice samplers, kept up to date as the storage is written.

The window rules themselves (``window="stream"`` / ``"episode"``, which start positions are valid)
are described in :mod:`imwm.replay.slices`; this module keeps them. Validity is a mask updated
lazily: ``extend`` and ``mark_update`` (which TorchRL calls with the written indices only, no data;
``mark_update`` also for writes through another buffer sharing the storage) record the positions
and their write stamps; the next ``sample`` (which gets the storage) recomputes the starts whose
window saw a write, with one cumulative sum per contiguous run of writes (reading the trajectory
ids of the ``T - 1`` neighbours under the episode rule; the stream rule reads no storage at all).
The cost is O(written * T), never O(N).
"""

from __future__ import annotations

import torch
from torchrl.data.replay_buffers.storages import Storage

from imwm.replay.compat import (
    DEFAULT_END_KEY,
    TRAJ_KEY_CANDIDATES,
    read_entry,
    storage_has,
    storage_keys,
)

__all__ = ["SliceWindowsMixin", "WINDOWS", "read_storage_key", "slice_index"]

# the window rules (see imwm.replay.slices)
WINDOWS = ("stream", "episode")
# beyond this many separate runs of written positions, one O(N) pass is cheaper than many small
_MAX_RUNS = 64


def slice_index(starts: torch.Tensor, slice_len: int, capacity: int) -> torch.Tensor:
    """Flat storage indices ``[B * T]`` of the slices starting at ``starts [B]`` (circular).

    Example:
        >>> slice_index(torch.tensor([0, 6]), 3, 8)  # the second slice wraps around the end
        tensor([0, 1, 2, 6, 7, 0])
    """
    offsets = torch.arange(slice_len, device=starts.device)
    return ((starts.unsqueeze(-1) + offsets) % capacity).reshape(-1)


def read_storage_key(storage: Storage, key, positions: torch.Tensor) -> torch.Tensor:
    """Values of one storage entry at ``positions``, flattened to ``[len(positions), -1]``.

    Reads the single key straight from a ``TensorStorage``'s backing TensorDict rather than
    gathering whole records (which would copy every frame of every position).

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage
        >>> storage = LazyTensorStorage(4)
        >>> storage.set(torch.arange(4), TensorDict({"traj_ids": torch.tensor([0, 0, 1, 1])}, [4]))
        >>> read_storage_key(storage, "traj_ids", torch.tensor([1, 2]))
        tensor([[0],
                [1]])
        >>> try:
        ...     read_storage_key(storage, "episode", torch.tensor([0]))
        ... except KeyError as err:
        ...     print(err.args[0].split(";")[0])
        the replay storage has no entry 'episode'
    """
    values = read_entry(storage, key, positions)
    if values is None:
        raise KeyError(
            f"the replay storage has no entry {key!r}; the slice samplers need it to find "
            f"trajectory boundaries (keys: {storage_keys(storage)})"
        )
    return values.reshape(positions.numel(), -1)


class SliceWindowsMixin:
    """The valid-start bookkeeping of :class:`~imwm.replay.slices.PrioritizedSliceSampler`.

    Sees the writes (``add`` / ``extend`` / ``mark_update``, and the records of a storage filled
    before the sampler saw it), keeps the valid-start mask ``_valid`` / ``_num_valid`` for the
    window rule, and resolves where trajectory boundaries are read. A new record starts without
    visits or feedback.

    The class it is mixed into provides the options (``max_capacity``, ``slice_len``,
    ``num_slices``, ``window``, ``num_streams``, ``ring_size``, ``traj_key``, ``end_key``,
    ``end_keys``, ``device``), the per-position statistics (``_visits``, ``_signal``,
    ``_has_signal``, ``_filled``, ``_valid``, ``_stamp``, ...), ``_set_slice_len``,
    ``_refresh_mass`` (which rewrites the sampling mass of some starts) and ``_adopt_buffer_key``
    (:class:`~imwm.replay.compat.BufferPriorityMixin`).
    """

    # ------------------------------------------------------------------ writes
    @staticmethod
    def _positions(index, device) -> torch.Tensor:
        index = torch.as_tensor(index, device=device)
        if index.ndim == 2:  # [n, 1] from a 1-D storage
            index = index[:, 0]
        return index.reshape(-1).long()

    def add(self, index: int) -> None:
        self.extend(torch.as_tensor([index]))

    def extend(self, index: torch.Tensor) -> None:
        index = self._positions(index, self.device)
        marked, self._marked = self._marked, None
        if marked is not None and marked.shape == index.shape and torch.equal(marked, index):
            return  # the owning buffer's own write, already seen through mark_update
        self._record_writes(index)

    def mark_update(self, index, *, storage: Storage | None = None) -> None:
        """Records a write at ``index`` made through any buffer sharing the storage.

        TorchRL's writers call it on every buffer attached to the storage; the owning buffer then
        repeats the write through :meth:`extend`, which is not counted twice.
        """
        self._adopt_buffer_key(storage)
        index = self._positions(index, self.device)
        self._record_writes(index)
        self._marked = index

    def _record_writes(self, index: torch.Tensor, first_stamp: int | None = None) -> None:
        if not index.numel():
            return
        # a new record starts fresh: no visits, no feedback
        self._visits[index] = 0
        self._signal[index] = 0.0
        self._has_signal[index] = False
        self._filled[index] = True
        if first_stamp is None:
            first_stamp = self._writes
            self._writes += index.numel()
        self._stamp[index] = first_stamp + torch.arange(index.numel(), device=self.device)
        self._pending.append(index)

    def _sync(self, storage: Storage) -> None:
        """Takes in the records of ``storage`` written before this sampler saw any write."""
        self._synced = True
        size = min(len(storage), self.max_capacity)
        unseen = torch.nonzero(~self._filled[:size]).reshape(-1) if size else self._filled[:0].long()
        if not unseen.numel():
            return
        if self.num_streams > 1:
            if bool(self._filled.any()):
                return  # the rings' unwritten rows count in len(storage): trust the writes seen
            raise RuntimeError(
                f"{type(self).__name__}(num_streams={self.num_streams}) cannot take in records it did not "
                f"see being written (the rings' write heads are not stored): build the buffer before "
                f"writing to the storage, or load the sampler's state_dict"
            )
        # oldest first: a full ring continues after the last written position
        cursor = getattr(storage, "_last_cursor_index", None)
        age = unseen if cursor is None or size < self.max_capacity else (unseen - int(cursor) - 1) % size
        order = unseen[age.argsort()]
        # stamped before every write seen so far (those started at 0)
        self._record_writes(order, first_stamp=-order.numel())

    # ------------------------------------------------------------------ valid starts
    def _refresh(self, storage: Storage) -> None:
        """Recomputes the validity and mass of every start whose slice saw a write."""
        if not self._synced:
            self._sync(storage)
        n, t = self.max_capacity, self.slice_len
        if self._full_refresh:
            self._pending, self._full_refresh = [], False
            self._recompute(storage, 0, n - 1)
            return
        if not self._pending:
            return
        written = torch.cat(self._pending).unique()
        self._pending = []
        if written.numel() + t - 1 >= n:
            self._recompute(storage, 0, n - 1)
            return
        cut = torch.nonzero(written.diff() != 1).reshape(-1) + 1
        bounds = torch.tensor_split(written, cut.tolist()) if cut.numel() else (written,)
        if len(bounds) > _MAX_RUNS:
            self._recompute(storage, 0, n - 1)
            return
        for run in bounds:
            self._recompute(storage, int(run[0]) - (t - 1), int(run[-1]))

    def _recompute(self, storage: Storage, first: int, last: int) -> None:
        """Validity of the starts ``first..last`` (unrolled: may be negative, wraps mod N)."""
        n, t = self.max_capacity, self.slice_len
        count = last - first + 1
        if count >= n:
            first, count = 0, n
        unrolled = torch.arange(first, first + count + t - 1, device=self.device)
        pos = unrolled % n
        filled = self._filled[pos]
        brk = torch.zeros(pos.shape, dtype=torch.bool, device=self.device)
        if t > 1:
            # both rules: written, in write order (a head is a drop of the stamp), one ring
            stamp = self._stamp[pos]
            brk[1:] = (stamp[1:] <= stamp[:-1]) | ~filled[1:] | ~filled[:-1]
            if self.num_streams > 1:
                brk[1:] |= pos[1:] % self.ring_size == 0
            if self.window == "episode" and bool(filled.any()):
                brk[1:] |= self._episode_change(storage, pos, filled)
        csum = brk.to(torch.int32).cumsum(0)
        # start i is valid iff written and no break between i and i + t - 1
        valid = filled[:count] & (csum[t - 1: t - 1 + count] == csum[:count])
        starts = pos[:count]
        self._num_valid += int(valid.sum()) - int(self._valid[starts].sum())
        self._valid[starts] = valid
        self._refresh_mass(starts)

    def _episode_change(self, storage: Storage, pos: torch.Tensor,
                        filled: torch.Tensor) -> torch.Tensor:
        """``[len(pos) - 1]``: whether a trajectory ends between ``pos[i]`` and ``pos[i + 1]``."""
        # read written rows only (point unwritten ones at a written row: their value is moot)
        safe = torch.where(filled, pos, pos[filled][:1].expand_as(pos))
        kind, keys = self._resolve_boundaries(storage)
        if kind == "traj":
            ids = read_storage_key(storage, keys[0], safe)
            return (ids[1:] != ids[:-1]).any(-1)
        ends = None
        for key in keys:
            values = read_entry(storage, key, safe)
            if values is not None:
                values = values.reshape(safe.numel(), -1).bool().any(-1)
                ends = values if ends is None else ends | values
        if ends is None:
            raise KeyError(
                f"the replay storage has none of the end keys {list(keys)}; the slice samplers need one "
                f"to find trajectory boundaries (keys: {storage_keys(storage)})"
            )
        return ends[:-1]

    def _resolve_boundaries(self, storage: Storage) -> tuple:
        """``("traj", (key,))`` or ``("end", keys)``: where trajectory boundaries are read."""
        if self._boundary_source is not None:
            return self._boundary_source
        ends = self.end_keys if self.end_keys is not None else (
            (self.end_key,) if self.end_key is not None else None)
        if self.traj_key is not None:
            # an explicit traj_key that the storage lacks raises in read_storage_key, unless end
            # keys were given too (TorchRL's fallback)
            use_traj = ends is None or storage_has(storage, self.traj_key)
            source = ("traj", (self.traj_key,)) if use_traj else ("end", ends)
        elif ends is not None:
            source = ("end", ends)
        else:
            found = next((k for k in TRAJ_KEY_CANDIDATES if storage_has(storage, k)), None)
            if found is not None:
                source = ("traj", (found,))
            elif storage_has(storage, DEFAULT_END_KEY):
                source = ("end", (DEFAULT_END_KEY,))
            else:
                raise KeyError(
                    f"{type(self).__name__} found no trajectory key in the replay storage (looked for "
                    f"{[*TRAJ_KEY_CANDIDATES, DEFAULT_END_KEY]}); pass traj_key= or end_key= "
                    f"(keys: {storage_keys(storage)})"
                )
        self._boundary_source = source
        return source

    # ------------------------------------------------------------------ batches
    def _slices_per_batch(self, batch_size: int) -> int:
        """Slices in a batch of ``batch_size`` records (fixes ``slice_len`` with ``num_slices``)."""
        if self.num_slices is None:
            if batch_size % self.slice_len:
                raise RuntimeError(
                    f"The batch-size must be divisible by the slice length, got "
                    f"batch_size={batch_size} and slice_len={self.slice_len}."
                )
            return batch_size // self.slice_len
        if batch_size % self.num_slices:
            raise RuntimeError(
                f"The batch-size must be divisible by the number of slices, got "
                f"batch_size={batch_size} and num_slices={self.num_slices}."
            )
        length = batch_size // self.num_slices
        if self.slice_len is None:
            self._set_slice_len(length)
        elif length != self.slice_len:
            raise RuntimeError(
                f"{type(self).__name__}(num_slices={self.num_slices}) has slice_len={self.slice_len} "
                f"from its first batch; batch_size={batch_size} would need slice_len={length}"
            )
        return self.num_slices

    def _sampleable_count(self, storage: Storage, batch_size: int) -> int:
        self._slices_per_batch(batch_size)
        self._refresh(storage)
        return self._num_valid

    def _check_storage(self, storage: Storage) -> None:
        if getattr(storage, "ndim", 1) != 1:
            raise RuntimeError(
                f"{type(self).__name__} needs a 1-D storage, got ndim={storage.ndim}"
            )
        size = getattr(storage, "max_size", None)
        if size is not None and int(size) != self.max_capacity:
            raise RuntimeError(
                f"{type(self).__name__} was built for max_capacity={self.max_capacity} but the "
                f"storage holds {size} records"
            )
