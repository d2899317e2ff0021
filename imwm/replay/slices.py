"""Shared machinery of imwm's sequence samplers: valid slice starts, per-item stats, sum trees.

DreamerV3 trains on slices (windows) ``[B, T]``. A storage position ``s`` is a *valid start* iff
the ``T`` records ``s, s+1, ..., s+T-1`` (circularly) are all written, were written in that order
and lie in one storage ring (one stream of :class:`~imwm.replay.StreamWriter`, or the whole
storage), which rules out crossing a write head (where the newest record is followed by the
oldest) and mixing streams. The *window rule* adds at most one condition:

- ``window="stream"`` (DreamerV3, danijar/dreamerv3 ``embodied/replay``: every window of ``T``
  consecutive steps of a worker's stream is an item): nothing more. A window may run across
  ``is_last`` / ``is_first``; the RSSM resets its state at ``is_first``. Every record of a stream
  is then covered by ``T`` starts (except the ``T - 1`` records next to a head or a ring edge), so
  terminal records and short episodes are replayed at their rate in the data.
- ``window="episode"``: all ``T`` records also belong to one trajectory (same ``traj_key``, or no
  ``end_key`` flag before the last one). Episodes shorter than ``T`` are never replayed, and an
  episode's last record is covered by a single start, so terminals are replayed ``T`` times less
  often than mid-episode records.

Only valid starts carry sampling mass; everything about an item (its priority, visit count,
feedback) lives at its start position, so the per-sequence loss of slice ``b`` maps back to
``info["index"].view(B, T)[b, 0]``.

Validity is kept as a mask updated lazily: ``extend`` and ``mark_update`` (which TorchRL calls with
the written indices only, no data; ``mark_update`` also for writes through another buffer sharing
the storage) record the positions and their write stamps; the next ``sample`` (which gets the
storage) recomputes the starts whose window saw a write, with one cumulative sum per contiguous run
of writes (reading the trajectory ids of the ``T - 1`` neighbours under the episode rule; the
stream rule reads no storage at all). The cost is O(written * T), never O(N).

:class:`PrioritizedSliceSampler` is the base of :class:`~imwm.replay.CuriousSampler`,
:class:`~imwm.replay.ExploreExploitSampler` and :class:`~imwm.replay.UniformSliceSampler`, so all of
them share the window rule and keep their priorities on top of it. It is ours rather than
TorchRL's ``PrioritizedSliceSampler`` because that one needs the C++ segment trees (which do not
load with torch 2.13), rescans trajectory boundaries over the whole storage, and has PER's
``priority ** alpha`` with importance weights, not visit counts or an infinite-priority pool. It
takes TorchRL's ``SliceSampler`` arguments (``num_slices`` / ``slice_len``, ``traj_key``,
``end_key``, ``truncated_key``, ...) and follows its conventions where they fit; the class
docstring lists where it differs.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from tensordict.utils import NestedKey
from torchrl.data.replay_buffers.samplers import PrioritizedSampler, Sampler
from torchrl.data.replay_buffers.storages import Storage

from imwm.replay.compat import (
    DEFAULT_END_KEY,
    REDUCTIONS,
    TRAJ_KEY_CANDIDATES,
    BufferPriorityMixin,
    read_entry,
    reduce_rows,
    step_flags,
    storage_has,
    storage_keys,
)
from imwm.replay.sum_tree import PriorityTree

__all__ = ["PrioritizedSliceSampler", "WINDOWS", "slice_index", "read_storage_key"]

# the window rules (see the module docstring)
WINDOWS = ("stream", "episode")
# beyond this many separate runs of written positions, one O(N) pass is cheaper than many small
_MAX_RUNS = 64
# stored signals are float32: a larger finite loss would overflow to inf there
_MAX_SIGNAL = torch.finfo(torch.float32).max
# cap of a computed priority (a formula can overflow, e.g. loss ** alpha): a capacity of 1e7
# such items still sums to a finite float64 total
_MAX_PRIORITY = 1e300


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def slice_index(starts: torch.Tensor, slice_len: int, capacity: int) -> torch.Tensor:
    """Flat storage indices ``[B * T]`` of the slices starting at ``starts [B]`` (circular)."""
    offsets = torch.arange(slice_len, device=starts.device)
    return ((starts.unsqueeze(-1) + offsets) % capacity).reshape(-1)


def read_storage_key(storage: Storage, key, positions: torch.Tensor) -> torch.Tensor:
    """Values of one storage entry at ``positions``, flattened to ``[len(positions), -1]``.

    Reads the single key straight from a ``TensorStorage``'s backing TensorDict rather than
    gathering whole records (which would copy every frame of every position).
    """
    values = read_entry(storage, key, positions)
    if values is None:
        raise KeyError(
            f"the replay storage has no entry {key!r}; the slice samplers need it to find "
            f"trajectory boundaries (keys: {storage_keys(storage)})"
        )
    return values.reshape(positions.numel(), -1)


class PrioritizedSliceSampler(BufferPriorityMixin, Sampler):
    """Samples slices of ``slice_len`` records whose start is drawn by a per-item priority.

    Works on a 1-D storage with any writer that writes each stream's records in time order into
    its own ring (TorchRL's ``RoundRobinWriter`` with one env, :class:`~imwm.replay.StreamWriter`
    with ``num_streams`` envs): the write-order stamp of consecutive records must increase along a
    slice, which is what stops slices at a write head. ``window="stream"`` trusts that each ring
    holds one stream (records of one env, or episodes that follow each other, each opened by
    ``is_first``): with several envs written batch by batch into one ring their chunks interleave,
    and a stream window would join two envs' steps. Give ``num_streams`` = number of envs with a
    ``StreamWriter`` of as many streams (as ``build_replay`` does).

    Subclasses define :meth:`_formula` (priority of items that received feedback) and which
    feedback signal they read (``signal_key``, also the default ``priority_key``). Items without
    feedback have priority ``initial`` (``inf``: sampled before any item with feedback, see
    :class:`~imwm.replay.sum_tree.PriorityTree`).

    Writes are seen the way TorchRL samplers see them: ``extend`` / ``add`` (the owning buffer's
    writes) and ``mark_update`` (TorchRL calls it on the samplers of *every* buffer attached to a
    storage after any write), so a sampler follows records written through another buffer that
    shares its storage; a write seen through both hooks counts once. A sampler that meets a
    storage holding records it never saw written (a new buffer over a filled storage) takes them
    in at its first sample, oldest first from the storage's write cursor, as records without
    feedback (priority ``initial``). That needs one ring: with ``num_streams > 1`` the rings'
    write heads are not in the storage, and sampling raises unless the sampler saw the writes or
    loaded its ``state_dict``.

    Args:
        max_capacity: capacity of the storage this sampler serves (checked at sampling).
        num_slices: number of slices per batch; the slice length is then
            ``batch_size // num_slices``, fixed by the first batch (the valid starts are kept for
            one length: a later batch size giving another length raises). Exclusive with
            ``slice_len``.
        slice_len: ``T``; the buffer's batch size must be a multiple of it
            (``num_slices = batch_size // T``, as for TorchRL's ``SliceSampler(slice_len=...)``).
            Give exactly one of ``num_slices`` / ``slice_len``.
        end_key: a flag marking the last record of a trajectory (e.g. ``"is_last"`` or
            ``("next", "done")``); episode rule only. Exclusive with ``end_keys``.
        end_keys: several such flags, OR-ed (those absent from the storage are skipped).
        traj_key: storage key of the trajectory id; episode rule only. By default (no
            ``traj_key``, ``end_key`` or ``end_keys``) the first of ``("collector", "traj_ids")``
            (written by TorchRL collectors), ``"traj_ids"`` (imwm's record layout) and
            ``"episode"`` that the storage holds, else the flag ``("next", "done")``, else an
            error naming the storage's keys; detected once, at the first sample. An explicit
            ``traj_key`` that the storage lacks raises (or falls back to ``end_key`` /
            ``end_keys`` when given) rather than matching nothing.
        truncated_key: where the per-step flags of a sample go in its info, as TorchRL's
            ``SliceSampler`` writes them (``TensorDictReplayBuffer.sample`` copies them into the
            batch): ``truncated`` on the last step of each slice, ``done`` (the sibling key) = stored
            ``done`` OR ``truncated``, ``terminated`` = stored (``False`` when absent), all
            ``[B * T, 1]``. ``None``: no flags (``build_replay`` passes ``None``: the DreamerV3
            record layout carries its own ``is_first`` / ``is_last`` / ``is_terminal``).
        init_key: if the storage holds this flag, the info carries it OR-ed with a mark on the
            first step of every slice (TorchRL's recurrent-module convention); ``None``: untouched.
        strict_length: only ``True`` (slices shorter than ``T`` are never drawn), for TorchRL
            compatibility.
        cache_values: accepted for TorchRL compatibility; the valid starts are always kept
            incrementally.
        span: only ``False`` (no partial slices at trajectory edges).
        window: the window rule (module docstring): ``"stream"`` (DreamerV3: windows run across
            episode ends, never across a write head or a ring edge) or ``"episode"`` (default,
            the rule before: windows stay inside one trajectory).
        num_streams: the storage is split into this many equal rings of
            ``max_capacity // num_streams`` records, one per stream, as
            :class:`~imwm.replay.StreamWriter` does; no window crosses a ring edge. ``1``: one
            circular ring over the whole storage.
        initial: priority of items that have had no feedback yet (> 0, may be ``inf``).
        arity: branching factor of the sum trees.
        nan_policy: what non-finite (NaN/inf) feedback does. ``"skip"`` (default): those items
            keep their previous signal (or ``initial`` if they had none), silently; the number
            of skipped values is counted in ``nonfinite_skipped`` (in :meth:`metrics`).
            ``"ignore"``: the same, plus a warning. ``"raise"``: ``ValueError`` and nothing of
            the batch is written.
        priority_key: the TensorDict entry that TorchRL's ``TensorDictReplayBuffer`` reads the
            per-slice signal from (``update_tensordict_priority``, ``extend``); defaults to the
            signal's name (``"model_loss"``, ``"kl"``). The buffer is made to read it (see
            :class:`~imwm.replay.compat.BufferPriorityMixin`): a ``td_error`` entry is ordinary
            data, not the signal, unless you pass ``priority_key="td_error"``.
        reduction: how per-record values become one value per slice (``"max"``, ``"min"``,
            ``"mean"``, ``"median"``), as TorchRL's prioritised samplers reduce them.
        device: device of the sampler's own tensors.

    Feedback: ``update_priority(index, values)`` takes the sampler's signal per slice, with
    ``index`` the slice starts ``[B]``, the flat sample index ``[B * T]`` (one value per slice)
    or a ``[B, T]`` index (one value per slice or per record). Called by a TorchRL buffer
    (``ReplayBuffer.update_priority``, ``update_tensordict_priority``: they pass ``storage``), a
    1-D index with one value each whose groups of ``T`` are consecutive storage positions is a
    flat sample with one value per record; per-record values are reduced per slice with
    ``reduction``. Called directly, a 1-D index with one value each is always slice starts.
    ``update_signals(starts, {name: values})`` (imwm's feedback) takes slice starts or the flat
    index.

    Differences from TorchRL's ``SliceSampler`` / ``PrioritizedSliceSampler``:

    - an item is a slice *start*, not a record: its priority decides how often the slice that
      starts there is drawn, and per-record feedback is reduced per slice;
    - the value given to ``update_priority`` is the subclass's signal (a loss, a KL), which
      :meth:`_formula` turns into a priority; there is no ``alpha`` / ``beta`` / ``eps`` and no
      importance weight (the info has no ``priority_weight``);
    - priorities may change between draws without any feedback: Curious Replay counts a visit
      for every sampled start, so a start drawn in one batch is less likely in the next;
    - items without feedback (``initial = inf``) are drawn first, distinct within a batch;
    - the storage is 1-D with ``max_capacity`` records, fixed at construction;
    - ``mark_update`` means "new records here": their visits and feedback are reset;
    - ``window="stream"`` has no TorchRL counterpart: its slices run across episode ends, so
      ``done`` may be set inside a slice;
    - the info flags are read from the flag entries only, not from the whole records;
    - with ``num_slices`` the first batch fixes the slice length;
    - an explicit ``traj_key`` missing from the storage raises instead of falling back to
      ``("next", "done")`` (unless ``end_key`` / ``end_keys`` are given);
    - ``update_tensordict_priority`` on a TensorDict without the ``priority_key`` entry raises
      instead of resetting the sampled items to the default priority.

    Non-finite feedback: a NaN/inf loss says nothing about the item (a diverged loss, not a
    badly predicted one), so the item keeps its previous signal rather than jumping to the
    maximum priority (which would replay, again and again, whatever made the loss diverge); in
    Curious Replay its count term still decays with each visit. Finite signals above the
    float32 range of the stored signal are clamped to it, and a priority computed from a finite
    signal is capped at ``1e300`` (``loss ** alpha`` can overflow), so no item with feedback ever
    has a non-finite priority; only ``initial = inf`` puts items in the inf pool.
    """

    signal_key: str | None = None  # which per-sequence signal update_signals() reads
    _uses_visits = False           # whether the priority depends on the visit count

    def __init__(
        self,
        max_capacity: int,
        *,
        num_slices: int | None = None,
        slice_len: int | None = None,
        end_key: NestedKey | None = None,
        end_keys: Sequence[NestedKey] | None = None,
        traj_key: NestedKey | None = None,
        truncated_key: NestedKey | None = ("next", "truncated"),
        init_key: NestedKey | None = "is_init",
        strict_length: bool = True,
        cache_values: bool = False,
        span: bool = False,
        window: str = "episode",
        num_streams: int = 1,
        initial: float = math.inf,
        arity: int = 32,
        nan_policy: str = "skip",
        priority_key: NestedKey | None = None,
        reduction: str = "max",
        device: str | torch.device = "cpu",
    ):
        _positive_int("max_capacity", max_capacity)
        initial = float(initial)
        if not initial > 0:  # also rejects NaN
            raise ValueError(f"initial must be > 0 (or inf), got {initial}")
        if nan_policy not in ("skip", "ignore", "raise"):
            raise ValueError(f"nan_policy must be 'skip', 'ignore' or 'raise', got {nan_policy!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
        if (num_slices is None) == (slice_len is None):
            raise ValueError(
                f"give exactly one of num_slices / slice_len, got num_slices={num_slices!r}, "
                f"slice_len={slice_len!r}"
            )
        if num_slices is not None:
            _positive_int("num_slices", num_slices)
        if window not in WINDOWS:
            raise ValueError(f"window must be 'stream' or 'episode', got {window!r}")
        _positive_int("num_streams", num_streams)
        if end_key is not None and end_keys is not None:
            raise ValueError(
                f"end_key and end_keys are exclusive, got end_key={end_key!r}, end_keys={end_keys!r}"
            )
        if strict_length is not True:
            raise ValueError(f"strict_length must be True (slices shorter than slice_len are never drawn), "
                             f"got {strict_length!r}")
        if span not in (False, 0) or isinstance(span, tuple):
            raise ValueError(f"span must be False (no partial slices at trajectory edges), got {span!r}")
        self.max_capacity = max_capacity
        self.window = window
        self.num_streams = num_streams
        self.ring_size = max_capacity // num_streams
        self.num_slices = num_slices
        self.slice_len = None
        if slice_len is not None:
            self._set_slice_len(slice_len)
        self.traj_key = traj_key
        self.end_key = end_key
        self.end_keys = None if end_keys is None else tuple(end_keys)
        self.truncated_key = truncated_key
        self.init_key = init_key
        self.strict_length = True
        self.cache_values = bool(cache_values)
        self.span = False
        self.initial = initial
        self.arity = int(arity)
        self.nan_policy = nan_policy
        self.priority_key = self.signal_key if priority_key is None else priority_key
        self.reduction = reduction
        self.device = torch.device(device)
        # visits are counted (and the info flags read) at sampling unless a composite sampler
        # does it for the whole batch
        self._count_visits = True
        self._emit_info = True
        # where trajectory boundaries come from, resolved at the first need: ("traj", key) or
        # ("end", keys)
        self._boundary_source: tuple | None = None
        self._tree = PriorityTree(max_capacity, arity=arity, device=self.device)
        self._alloc()

    def _set_slice_len(self, slice_len: int) -> None:
        _positive_int("slice_len", slice_len)
        if slice_len > self.max_capacity:
            raise ValueError(f"slice_len ({slice_len}) cannot exceed max_capacity ({self.max_capacity})")
        if self.ring_size < slice_len:
            raise ValueError(
                f"num_streams={self.num_streams} splits max_capacity={self.max_capacity} into rings of "
                f"{self.ring_size} records, fewer than slice_len={slice_len}"
            )
        self.slice_len = slice_len

    def _alloc(self) -> None:
        n, dev = self.max_capacity, self.device
        self._visits = torch.zeros(n, dtype=torch.int32, device=dev)
        self._signal = torch.zeros(n, dtype=torch.float32, device=dev)
        self._has_signal = torch.zeros(n, dtype=torch.bool, device=dev)
        self._filled = torch.zeros(n, dtype=torch.bool, device=dev)
        self._valid = torch.zeros(n, dtype=torch.bool, device=dev)
        self._num_valid = 0
        # write order of each record: a slice must see it strictly increase, which stops it at
        # the circular write head (newest record followed by the oldest) of any writer
        self._stamp = torch.zeros(n, dtype=torch.int64, device=dev)
        self._writes = 0
        self._pending: list[torch.Tensor] = []
        # validity must be recomputed everywhere (a state saved under another window rule)
        self._full_refresh = False
        # starts whose visit count rose but whose tree mass was not refreshed yet (see
        # record_visits); refreshed before the next draw or by the feedback on them
        self._stale: torch.Tensor | None = None
        # feedback values dropped for being NaN/inf (nan_policy "skip" / "ignore")
        self.nonfinite_skipped = 0
        # positions of the last mark_update, which the owning buffer's extend repeats
        self._marked: torch.Tensor | None = None
        # whether the storage was checked for records written before this sampler saw them
        self._synced = False
        self._tree.clear()

    # ------------------------------------------------------------------ priorities
    def _formula(self, signal: torch.Tensor, visits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _priority(self, index: torch.Tensor) -> torch.Tensor:
        p = self._formula(self._signal[index].double(), self._visits[index].double())
        # signals are finite and >= 0, so only an overflow can make p non-finite: cap it
        p = torch.nan_to_num(p, nan=_MAX_PRIORITY, posinf=_MAX_PRIORITY, neginf=0.0)
        p = p.clamp(0.0, _MAX_PRIORITY)
        return torch.where(self._has_signal[index], p, torch.full_like(p, self.initial))

    def _refresh_mass(self, index: torch.Tensor) -> None:
        mass = self._priority(index).masked_fill(~self._valid[index], 0.0)
        self._tree._write(index, mass)

    def priorities(self, index) -> torch.Tensor:
        """Current priority of the items at ``index`` (float64; ``initial`` until feedback).

        This is the item's own priority, whether or not its slice is currently a valid start.
        """
        return self._priority(self._check_index(index).reshape(-1))

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

    # ------------------------------------------------------------------ sampling
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

    def sample_starts(self, storage: Storage, num_slices: int) -> torch.Tensor:
        """Draws ``num_slices`` valid start positions by priority (inf items first)."""
        self._check_storage(storage)
        if self.slice_len is None:
            raise RuntimeError(
                f"{type(self).__name__}(num_slices={self.num_slices}) learns its slice length from the "
                f"first batch: sample through the buffer (or sample(storage, batch_size)) first"
            )
        if len(storage) == 0:
            raise RuntimeError("Cannot sample from an empty storage.")
        self._refresh(storage)
        self._flush_stale()
        if self._num_valid == 0:
            what = "trajectory" if self.window == "episode" else "stream"
            raise RuntimeError(
                f"no valid slice start: no {what} in the storage has {self.slice_len} "
                f"consecutive records (before the write head). Records of one {what} must be "
                f"contiguous in storage: with several envs written batch by batch, each env's "
                f"chunk must hold at least slice_len={self.slice_len} records"
            )
        starts = self._tree.sample(num_slices, generator=self._rng)
        if self._count_visits:
            self.record_visits(starts)
        return starts

    def sample(self, storage: Storage, batch_size: int) -> tuple[tuple[torch.Tensor], dict]:
        self._adopt_buffer_key(storage)
        num_slices = self._slices_per_batch(batch_size)
        starts = self.sample_starts(storage, num_slices)
        index = slice_index(starts, self.slice_len, self.max_capacity)
        info = self.step_flags(storage, index) if self._emit_info else {}
        return (index,), info

    def step_flags(self, storage: Storage, index: torch.Tensor) -> dict:
        """The per-step info flags of the flat slice index ``index`` (see ``truncated_key``)."""
        return step_flags(storage, index, index.numel() // self.slice_len,
                          truncated_key=self.truncated_key, init_key=self.init_key)

    def record_visits(self, starts: torch.Tensor) -> None:
        """Counts one visit per occurrence of each start (duplicates count twice)."""
        starts = torch.as_tensor(starts, device=self.device).reshape(-1).long()
        if not starts.numel():
            return
        self._visits.index_put_(
            (starts,), torch.ones_like(starts, dtype=self._visits.dtype), accumulate=True
        )
        if self._uses_visits:
            # The tree mass of these starts is refreshed lazily: in the usual loop the feedback
            # on exactly these starts comes next and refreshes them anyway, so refreshing here
            # too would write the same tree paths twice. priorities() reads the stats, not the
            # tree, so it is current either way.
            self._flush_stale()
            self._stale = starts

    def _flush_stale(self) -> None:
        if self._stale is not None:
            stale, self._stale = self._stale, None
            self._refresh_mass(stale)

    # ------------------------------------------------------------------ feedback
    def _check_index(self, index) -> torch.Tensor:
        if isinstance(index, tuple):
            if len(index) != 1:
                raise ValueError(f"expected a 1-D storage index, got a {len(index)}-tuple")
            index = index[0]
        index = torch.as_tensor(index, device=self.device)
        if index.dtype.is_floating_point or index.dtype == torch.bool:
            raise TypeError(f"index must hold integers, got dtype {index.dtype}")
        index = index.long()
        if index.numel():
            out = (index < 0) | (index >= self.max_capacity)
            if bool(out.any()):
                bad = int(index[out][0])
                raise IndexError(
                    f"index {bad} out of range for a sampler of max_capacity {self.max_capacity}"
                )
        return index

    def _is_flat_slices(self, index: torch.Tensor) -> bool:
        """Whether a 1-D ``index`` is slices of ``T`` consecutive positions (a flat sample)."""
        t = self.slice_len
        if t is None or t < 2 or index.numel() % t:
            return False
        rows = index.view(-1, t)
        return bool(((rows[:, 1:] - rows[:, :-1]) % self.max_capacity == 1).all())

    def _per_slice(self, index, values: Sequence, *, records: bool) -> tuple[torch.Tensor, list]:
        """Maps feedback to one value per slice start: ``(starts [B], [values [B], ...])``.

        ``index``: slice starts (one value each), the flat ``[B * T]`` slice index (one value per
        slice), a ``[B, T]`` index (one value per slice or per record), or, with ``records``, a
        flat slice index with one value per record. Per-record values are reduced per slice
        with ``reduction``.
        """
        index = self._check_index(index)
        t = self.slice_len or 1
        values = [torch.as_tensor(v, device=self.device).detach().reshape(-1).double() for v in values]
        n = values[0].numel()
        for v in values[1:]:
            if v.numel() != n:
                raise ValueError(f"got {v.numel()} values next to {n} values: give one set per slice")
        per_record = False
        if index.ndim == 2 and index.shape[-1] == t and t > 1:
            rows = index
            if n == rows.numel() and n != rows.shape[0]:
                per_record = True
            elif n != rows.shape[0]:
                raise ValueError(f"got a {tuple(rows.shape)} slice index for {n} values")
            starts = rows[:, 0]
        else:
            index = index.reshape(-1)
            m = index.numel()
            if t > 1 and m == n * t:
                starts = index.view(n, t)[:, 0]
            elif m == n:
                per_record = records and self._is_flat_slices(index)
                starts = index.view(-1, t)[:, 0] if per_record else index
            else:
                raise ValueError(
                    f"got {m} indices for {n} values: give one index per value (slice starts), "
                    f"the flat {n} x {t} slice index, or one value per record of a flat slice index"
                )
        if per_record:
            values = [reduce_rows(v.view(-1, t), self.reduction) for v in values]
        return starts, values

    def _finite_values(self, name: str, values, index: torch.Tensor):
        values = torch.as_tensor(values, device=self.device).detach().reshape(-1).double()
        if values.numel() != index.numel():
            raise ValueError(f"{name} has {values.numel()} values for {index.numel()} indices")
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            msg = (f"{name} holds {int(bad.sum())} non-finite value(s) (NaN/inf) at storage "
                   f"index {index[bad][:5].tolist()}")
            if self.nan_policy == "raise":
                raise ValueError(msg + "; refusing to write them into the priority tree")
            if self.nan_policy == "ignore":
                warnings.warn(msg + "; those items keep their previous priority")
            self.nonfinite_skipped += int(bad.sum())
            return index[~bad], values[~bad]
        return index, values

    def _set_signal(self, index: torch.Tensor, signal: torch.Tensor) -> None:
        # finite >= 0 (checked by the caller); clamp into float32 so that it stays finite there
        self._signal[index] = signal.clamp(max=_MAX_SIGNAL).to(self._signal.dtype)
        self._has_signal[index] = True
        stale = self._stale
        if stale is not None and stale.shape == index.shape and torch.equal(stale, index):
            self._stale = None  # the refresh below covers them
        self._refresh_mass(index)

    def _apply_signal(self, starts: torch.Tensor, values: torch.Tensor) -> None:
        """Sets the signal of the slices at ``starts`` (one value each); subclasses override."""
        raise self._not_prioritised_error()

    def update_priority(self, index, priority, *, storage: Storage | None = None) -> None:
        """Sets this sampler's signal (``signal_key``) of the slices at ``index``.

        TorchRL's entry point (``ReplayBuffer.update_priority``,
        ``TensorDictReplayBuffer.update_tensordict_priority``); ``index`` and ``priority`` as in
        the class docstring. The values are the signal, not priorities: the sampler's formula
        makes the priority.
        """
        if self._torchrl_default(priority, storage):
            return
        self._adopt_buffer_key(storage)
        if self.signal_key is None:
            raise self._not_prioritised_error()
        starts, (values,) = self._per_slice(index, [priority], records=storage is not None)
        self._apply_signal(starts, values)

    def update_signals(self, index, signals) -> None:
        """Applies this sampler's ``signal_key`` entry of ``signals`` (``[B]``, one per slice).

        ``index``: the slice starts ``[B]`` or the flat ``[B * T]`` slice index of the sample.
        """
        if self.signal_key is None:
            return
        try:
            value = signals[self.signal_key]
        except KeyError:
            raise KeyError(
                f"{type(self).__name__} needs the per-sequence signal {self.signal_key!r}; "
                f"got keys {list(signals.keys())}"
            ) from None
        starts, (values,) = self._per_slice(index, [value], records=False)
        self._apply_signal(starts, values)

    # ------------------------------------------------------------------ state
    def metrics(self) -> dict[str, float]:
        """Mean visit count, fraction of inf-priority starts, priority entropy, valid starts and
        the number of non-finite feedback values skipped so far."""
        self._flush_stale()
        out = {"valid_starts": float(self._num_valid),
               "nonfinite_skipped": float(self.nonfinite_skipped)}
        filled = self._filled
        out["mean_visits"] = float(self._visits[filled].double().mean()) if filled.any() else 0.0
        num_inf = self._tree.num_inf
        out["inf_frac"] = num_inf / self._num_valid if self._num_valid else 0.0
        mass = self._tree.finite.leaves()
        total = float(mass.sum())
        if total > 0:
            p = mass[mass > 0] / total
            h = float(-(p * p.log()).sum())
            out["priority_entropy"] = h
            out["priority_entropy_norm"] = h / math.log(p.numel()) if p.numel() > 1 else 1.0
        else:
            out["priority_entropy"] = 0.0
            out["priority_entropy_norm"] = 0.0
        return out

    def _hyper(self) -> dict[str, Any]:
        return {"max_capacity": self.max_capacity, "slice_len": self.slice_len,
                "num_slices": self.num_slices,
                "initial": self.initial, "window": self.window, "num_streams": self.num_streams}

    def state_dict(self) -> dict[str, Any]:
        self._flush_stale()
        pending = torch.cat(self._pending) if self._pending else torch.zeros(0, dtype=torch.long)
        return {
            "hyper": self._hyper(),
            "visits": self._visits.clone(),
            "signal": self._signal.clone(),
            "has_signal": self._has_signal.clone(),
            "filled": self._filled.clone(),
            "valid": self._valid.clone(),
            "num_valid": self._num_valid,
            "stamp": self._stamp.clone(),
            "writes": self._writes,
            "pending": pending.clone(),
            "full_refresh": self._full_refresh,
            "nonfinite_skipped": self.nonfinite_skipped,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "hyper" not in state_dict:
            # TorchRL's SliceSampler saves {}: the uniform replay of one env under the episode rule
            raise ValueError(
                f"the saved sampler state is not a {type(self).__name__}'s (keys "
                f"{sorted(state_dict)}); a replay saved with TorchRL's SliceSampler (replay=uniform, "
                f"one env, window=episode) resumes with replay.window=episode"
            )
        saved_len = state_dict["hyper"].get("slice_len")
        if self.slice_len is None and saved_len is not None:
            self._set_slice_len(int(saved_len))  # num_slices: the saved batches fixed the length
        mine = self._hyper()
        for key, value in state_dict["hyper"].items():
            if key in ("max_capacity", "slice_len") and mine.get(key) != value:
                raise ValueError(
                    f"cannot load a {type(self).__name__} state with {key}={value} into one "
                    f"with {key}={mine.get(key)}"
                )
        dev = self.device
        self._visits = state_dict["visits"].to(dev, torch.int32).clone()
        self._signal = state_dict["signal"].to(dev, torch.float32).clone()
        self._has_signal = state_dict["has_signal"].to(dev, torch.bool).clone()
        self._filled = state_dict["filled"].to(dev, torch.bool).clone()
        self._valid = state_dict["valid"].to(dev, torch.bool).clone()
        self._num_valid = int(state_dict["num_valid"])
        self._stamp = state_dict["stamp"].to(dev, torch.int64).clone()
        self._writes = int(state_dict["writes"])
        pending = state_dict["pending"].to(dev)
        self._pending = [pending] if pending.numel() else []
        self._stale = None
        self._marked = None
        self._synced = False
        # A state saved under another window rule or ring layout (states saved before these
        # options existed used the episode rule and one ring) has another valid mask: recompute
        # it from the stamps and the storage at the next sample, O(N) once.
        saved = state_dict["hyper"]
        self._full_refresh = bool(state_dict.get("full_refresh", False)) or (
            saved.get("window", "episode") != self.window
            or int(saved.get("num_streams", 1)) != self.num_streams)
        # absent from states saved before the counter existed
        self.nonfinite_skipped = int(state_dict.get("nonfinite_skipped", 0))
        # the tree is a function of the stats: rebuild it in one O(N) pass
        everything = torch.arange(self.max_capacity, device=dev)
        mass = torch.where(self._valid, self._priority(everything), 0.0)
        self._tree.set_all(mass)

    def _empty(self) -> None:
        self._alloc()

    def dumps(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "sampler_state.pt")

    def loads(self, path) -> None:
        state = torch.load(Path(path) / "sampler_state.pt", weights_only=True)
        self.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(max_capacity={self.max_capacity}, "
                f"slice_len={self.slice_len}, window={self.window!r}, "
                f"num_streams={self.num_streams}, valid_starts={self._num_valid})")


# TorchRL's TensorDictReplayBuffer hands priority updates only to PrioritizedSampler instances
# (update_tensordict_priority returns silently otherwise); UniformSliceSampler is registered
# too, through this base, so that the update raises instead of vanishing.
PrioritizedSampler.register(PrioritizedSliceSampler)
