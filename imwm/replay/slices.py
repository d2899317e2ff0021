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

Validity is kept as a mask updated lazily: ``extend`` (which TorchRL calls with the written indices
only, no data) records the positions and their write stamps; the next ``sample`` (which gets the
storage) recomputes the starts whose window saw a write, with one cumulative sum per contiguous run
of writes (reading the trajectory ids of the ``T - 1`` neighbours under the episode rule; the
stream rule reads no storage at all). The cost is O(written * T), never O(N).

:class:`PrioritizedSliceSampler` is the base of :class:`~imwm.replay.CuriousSampler`,
:class:`~imwm.replay.ExploreExploitSampler` and :class:`~imwm.replay.UniformSliceSampler`, so all of
them share the window rule and keep their priorities on top of it. It is ours rather than
TorchRL's ``PrioritizedSliceSampler`` because that one needs the C++ segment trees (which do not
load with torch 2.13), rescans trajectory boundaries over the whole storage, and has PER's
``priority ** alpha`` with importance weights, not visit counts or an infinite-priority pool.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage

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


def slice_index(starts: torch.Tensor, slice_len: int, capacity: int) -> torch.Tensor:
    """Flat storage indices ``[B * T]`` of the slices starting at ``starts [B]`` (circular)."""
    offsets = torch.arange(slice_len, device=starts.device)
    return ((starts.unsqueeze(-1) + offsets) % capacity).reshape(-1)


def read_storage_key(storage: Storage, key, positions: torch.Tensor) -> torch.Tensor:
    """Values of one storage entry at ``positions``, flattened to ``[len(positions), -1]``.

    Reads the single key straight from a ``TensorStorage``'s backing TensorDict rather than
    gathering whole records (which would copy every frame of every position).
    """
    data = getattr(storage, "_storage", None)
    if isinstance(data, TensorDictBase):
        values = data.get(key, None)
        if values is None:
            raise KeyError(
                f"the replay storage has no entry {key!r}; the slice samplers need it to find "
                f"trajectory boundaries (keys: {list(data.keys(True, True))})"
            )
        values = values[positions.to(values.device)]
    else:
        values = storage[positions][key]
    return values.reshape(positions.numel(), -1).to(positions.device)


class PrioritizedSliceSampler(Sampler):
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
    feedback signal they read (``signal_key``). Items without feedback have priority ``initial``
    (``inf``: sampled before any item with feedback, see
    :class:`~imwm.replay.sum_tree.PriorityTree`).

    Args:
        max_capacity: capacity of the storage this sampler serves (checked at sampling).
        slice_len: ``T``; the buffer's batch size must be a multiple of it
            (``num_slices = batch_size // T``, as for TorchRL's ``SliceSampler(slice_len=...)``).
        window: the window rule (module docstring): ``"stream"`` (DreamerV3: windows run across
            episode ends, never across a write head or a ring edge) or ``"episode"`` (default,
            the rule before: windows stay inside one trajectory).
        num_streams: the storage is split into this many equal rings of
            ``max_capacity // num_streams`` records, one per stream, as
            :class:`~imwm.replay.StreamWriter` does; no window crosses a ring edge. ``1``: one
            circular ring over the whole storage.
        traj_key: storage key of the trajectory id (default ``"traj_ids"``); episode rule only.
        end_key: alternatively, a boolean key marking the last record of a trajectory
            (e.g. ``"is_last"``); exclusive with ``traj_key``; episode rule only.
        initial: priority of items that have had no feedback yet (> 0, may be ``inf``).
        arity: branching factor of the sum trees.
        nan_policy: what non-finite (NaN/inf) feedback does. ``"skip"`` (default): those items
            keep their previous signal (or ``initial`` if they had none), silently; the number
            of skipped values is counted in ``nonfinite_skipped`` (in :meth:`metrics`).
            ``"ignore"``: the same, plus a warning. ``"raise"``: ``ValueError`` and nothing of
            the batch is written.
        device: device of the sampler's own tensors.

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
        slice_len: int = 1,
        window: str = "episode",
        num_streams: int = 1,
        traj_key: str | None = "traj_ids",
        end_key: str | None = None,
        initial: float = math.inf,
        arity: int = 32,
        nan_policy: str = "skip",
        device: str | torch.device = "cpu",
    ):
        if not isinstance(max_capacity, int) or isinstance(max_capacity, bool) or max_capacity < 1:
            raise ValueError(f"max_capacity must be an integer >= 1, got {max_capacity!r}")
        if not isinstance(slice_len, int) or isinstance(slice_len, bool) or slice_len < 1:
            raise ValueError(f"slice_len must be an integer >= 1, got {slice_len!r}")
        if slice_len > max_capacity:
            raise ValueError(f"slice_len ({slice_len}) cannot exceed max_capacity ({max_capacity})")
        if window not in WINDOWS:
            raise ValueError(f"window must be 'stream' or 'episode', got {window!r}")
        if not isinstance(num_streams, int) or isinstance(num_streams, bool) or num_streams < 1:
            raise ValueError(f"num_streams must be an integer >= 1, got {num_streams!r}")
        if max_capacity // num_streams < slice_len:
            raise ValueError(
                f"num_streams={num_streams} splits max_capacity={max_capacity} into rings of "
                f"{max_capacity // num_streams} records, fewer than slice_len={slice_len}"
            )
        if window == "episode" and (traj_key is None) == (end_key is None):
            raise ValueError(
                f"give exactly one of traj_key / end_key, got traj_key={traj_key!r}, "
                f"end_key={end_key!r}"
            )
        initial = float(initial)
        if not initial > 0:  # also rejects NaN
            raise ValueError(f"initial must be > 0 (or inf), got {initial}")
        if nan_policy not in ("skip", "ignore", "raise"):
            raise ValueError(f"nan_policy must be 'skip', 'ignore' or 'raise', got {nan_policy!r}")
        self.max_capacity = max_capacity
        self.slice_len = slice_len
        self.window = window
        self.num_streams = num_streams
        self.ring_size = max_capacity // num_streams
        self.traj_key = traj_key
        self.end_key = end_key
        self.initial = initial
        self.arity = int(arity)
        self.nan_policy = nan_policy
        self.device = torch.device(device)
        # visits are counted at sampling unless a composite sampler counts them for us
        self._count_visits = True
        self._tree = PriorityTree(max_capacity, arity=arity, device=self.device)
        self._alloc()

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
        return self._priority(self._check_index(index))

    # ------------------------------------------------------------------ writes
    def add(self, index: int) -> None:
        self.extend(torch.as_tensor([index]))

    def extend(self, index: torch.Tensor) -> None:
        index = torch.as_tensor(index, device=self.device)
        if index.ndim == 2:  # [n, 1] from a 1-D storage
            index = index[:, 0]
        index = index.reshape(-1).long()
        if not index.numel():
            return
        # a new record starts fresh: no visits, no feedback
        self._visits[index] = 0
        self._signal[index] = 0.0
        self._has_signal[index] = False
        self._filled[index] = True
        self._stamp[index] = self._writes + torch.arange(index.numel(), device=self.device)
        self._writes += index.numel()
        self._pending.append(index)

    def _refresh(self, storage: Storage) -> None:
        """Recomputes the validity and mass of every start whose slice saw a write."""
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
        if self.traj_key is not None:
            ids = read_storage_key(storage, self.traj_key, safe)
            return (ids[1:] != ids[:-1]).any(-1)
        ends = read_storage_key(storage, self.end_key, safe).bool().any(-1)
        return ends[:-1]

    # ------------------------------------------------------------------ sampling
    def _sampleable_count(self, storage: Storage, batch_size: int) -> int:
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

    def num_slices(self, batch_size: int) -> int:
        if batch_size % self.slice_len:
            raise RuntimeError(
                f"The batch-size must be divisible by the slice length, got "
                f"batch_size={batch_size} and slice_len={self.slice_len}."
            )
        return batch_size // self.slice_len

    def sample_starts(self, storage: Storage, num_slices: int) -> torch.Tensor:
        """Draws ``num_slices`` valid start positions by priority (inf items first)."""
        self._check_storage(storage)
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
        starts = self.sample_starts(storage, self.num_slices(batch_size))
        return (slice_index(starts, self.slice_len, self.max_capacity),), {}

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
        index = index.reshape(-1).long()
        if index.numel():
            out = (index < 0) | (index >= self.max_capacity)
            if bool(out.any()):
                bad = int(index[out][0])
                raise IndexError(
                    f"index {bad} out of range for a sampler of max_capacity {self.max_capacity}"
                )
        return index

    def _starts_for(self, index, n_values: int) -> torch.Tensor:
        """Maps ``index`` to one start per value: starts as given, or flat slices -> first item."""
        index = self._check_index(index)
        if index.numel() == n_values:
            return index
        if index.numel() == n_values * self.slice_len:
            return index.view(n_values, self.slice_len)[:, 0]
        raise ValueError(
            f"got {index.numel()} indices for {n_values} values: give one index per value "
            f"(slice starts) or the flat {n_values} x {self.slice_len} slice index"
        )

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

    def update_signals(self, index, signals) -> None:
        """Applies this sampler's ``signal_key`` entry of ``signals`` (``[B]``, one per slice)."""
        if self.signal_key is None:
            return
        try:
            value = signals[self.signal_key]
        except KeyError:
            raise KeyError(
                f"{type(self).__name__} needs the per-sequence signal {self.signal_key!r}; "
                f"got keys {list(signals.keys())}"
            ) from None
        self.update_priority(index, value)

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
