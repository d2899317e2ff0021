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

Validity is kept as a mask updated lazily, at O(written * T) per sample, never O(N)
(:mod:`imwm.replay.slice_windows`).

:class:`PrioritizedSliceSampler` is the base of :class:`~imwm.replay.CuriousSampler`,
:class:`~imwm.replay.ExploreExploitSampler` and :class:`~imwm.replay.UniformSliceSampler`, so all of
them share the window rule and keep their priorities on top of it. It is ours rather than
TorchRL's ``PrioritizedSliceSampler`` because that one needs the C++ segment trees (which do not
load with torch 2.13), rescans trajectory boundaries over the whole storage, and has PER's
``priority ** alpha`` with importance weights, not visit counts or an infinite-priority pool. It
takes TorchRL's ``SliceSampler`` arguments (``num_slices`` / ``slice_len``, ``traj_key``,
``end_key``, ``truncated_key``, ...) and follows its conventions where they fit; the class
docstring lists where it differs.

The sampler is assembled from one module per concern: :mod:`imwm.replay.slice_windows` (writes
and valid starts), :mod:`imwm.replay.slice_feedback` (``update_priority`` / ``update_signals``
mapped onto slice starts) and :mod:`imwm.replay.slice_state` (checkpoints); this module holds the
options, the per-item statistics and their priorities, and sampling.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from tensordict.utils import NestedKey
from torchrl.data.replay_buffers.samplers import PrioritizedSampler, Sampler
from torchrl.data.replay_buffers.storages import Storage

from imwm.errors import check_integer
from imwm.replay.compat import REDUCTIONS, step_flags
from imwm.replay.slice_feedback import SliceFeedbackMixin
from imwm.replay.slice_state import SliceStateMixin
from imwm.replay.slice_windows import WINDOWS, SliceWindowsMixin, read_storage_key, slice_index
from imwm.replay.sum_tree import PriorityTree

__all__ = ["PrioritizedSliceSampler", "WINDOWS", "slice_index", "read_storage_key"]

# cap of a computed priority (a formula can overflow, e.g. loss ** alpha): a capacity of 1e7
# such items still sums to a finite float64 total
_MAX_PRIORITY = 1e300


def _check_options(max_capacity, *, initial, nan_policy, reduction, num_slices, slice_len, window,
                   num_streams, end_key, end_keys, strict_length, span) -> None:
    """Raises ``ValueError`` for the first invalid constructor argument of the slice samplers."""
    check_integer("max_capacity", max_capacity)
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
        check_integer("num_slices", num_slices)
    if window not in WINDOWS:
        raise ValueError(f"window must be 'stream' or 'episode', got {window!r}")
    check_integer("num_streams", num_streams)
    if end_key is not None and end_keys is not None:
        raise ValueError(
            f"end_key and end_keys are exclusive, got end_key={end_key!r}, end_keys={end_keys!r}"
        )
    if strict_length is not True:
        raise ValueError(f"strict_length must be True (slices shorter than slice_len are never drawn), "
                         f"got {strict_length!r}")
    if span not in (False, 0) or isinstance(span, tuple):
        raise ValueError(f"span must be False (no partial slices at trajectory edges), got {span!r}")


class PrioritizedSliceSampler(SliceFeedbackMixin, SliceWindowsMixin, SliceStateMixin, Sampler):
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

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> class Uniform(PrioritizedSliceSampler):   # a subclass only maps feedback to a priority
        ...     def _formula(self, signal, visits):
        ...         return torch.ones_like(signal)
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(16), batch_size=2 * 4,
        ...     sampler=Uniform(16, slice_len=4))                # 2 slices of 4
        >>> ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])          # episodes of 3 and 5 records
        >>> _ = rb.extend(TensorDict({"traj_ids": ids, "t": torch.arange(8)}, [8]))
        >>> batch = rb.sample()
        >>> batch.shape, sorted(batch["t"].view(2, 4).tolist())  # the only 2 windows, once each
        (torch.Size([8]), [[3, 4, 5, 6], [4, 5, 6, 7]])
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
        _check_options(max_capacity, initial=initial, nan_policy=nan_policy, reduction=reduction,
                       num_slices=num_slices, slice_len=slice_len, window=window,
                       num_streams=num_streams, end_key=end_key, end_keys=end_keys,
                       strict_length=strict_length, span=span)
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
        self.initial = float(initial)
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
        check_integer("slice_len", slice_len)
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

    def _empty(self) -> None:
        self._alloc()

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

    # ------------------------------------------------------------------ sampling
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

    # ------------------------------------------------------------------ statistics
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

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(max_capacity={self.max_capacity}, "
                f"slice_len={self.slice_len}, window={self.window!r}, "
                f"num_streams={self.num_streams}, valid_starts={self._num_valid})")


# TorchRL's TensorDictReplayBuffer hands priority updates only to PrioritizedSampler instances
# (update_tensordict_priority returns silently otherwise); UniformSliceSampler is registered
# too, through this base, so that the update raises instead of vanishing.
PrioritizedSampler.register(PrioritizedSliceSampler)
