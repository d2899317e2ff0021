"""OnlineQueue: every freshly written window is replayed once, before the sampler's own draws."""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage

from imwm.replay.composite import CompositeSampler, slice_leaves
from imwm.replay.slices import PrioritizedSliceSampler, slice_index
from imwm.replay.trend import TrendMixture

__all__ = ["OnlineQueue"]


class OnlineQueue(CompositeSampler):
    """DreamerV3's online replay: each stream, cut into consecutive windows of ``T`` records, has
    every window replayed once, oldest first, before the wrapped sampler fills the batch.

    Reference: danijar/dreamerv3 ``embodied/replay/replay.py``, ``Replay(online=True)`` (config
    ``replay.online``): when a stream has grown by another ``length`` steps, the window of those
    steps joins a FIFO queue; each sampled row pops the queue while it is not empty and only then
    asks the selector (``replay.fracs: {uniform, priority, recency}``; here ``sampler``, e.g. a
    :class:`~imwm.replay.UniformSliceSampler` or a :class:`~imwm.replay.MixtureSampler`). So every
    step is trained on once soon after it was collected, and the rest of each batch is replayed
    as before. (That holds while the updates take at least one batch row per ``T`` env steps, as
    any usual ``train_ratio`` does; otherwise the queue grows and its oldest windows go stale.)

    The windows tile each storage ring from its first write on (the ring's stream position
    ``0, T, 2T, ...``), in the order they were completed. A queued window is sampled only if it
    is still intact (its first record has the write stamp it had when queued; later records of a
    ring are overwritten after it) and a valid start under the wrapped samplers' window rule:
    with several rings the tile that runs over a ring's end is dropped (about ``T`` records per
    ring lap), and with ``window="episode"`` every tile that crosses an episode end, so use
    ``window="stream"``. The queue keeps at most ``max_capacity // T`` windows (the storage holds
    no more intact ones).

    Visits, feedback, state and metrics go to the wrapped sampler (its metrics unprefixed), plus
    ``online_queue`` (windows waiting) and ``online_frac`` (share of the last batch that came
    from the queue). ``self.trend`` is the wrapped sampler's trend gate, if any.

    Args:
        sampler: the sampler that fills the rest of each batch; every
            :class:`~imwm.replay.slices.PrioritizedSliceSampler` in it must share one window rule
            and ring layout (``window``, ``num_streams``), as ``build_replay`` builds them.

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from imwm.replay import UniformSliceSampler
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=3 * 4,
        ...     sampler=OnlineQueue(UniformSliceSampler(100, slice_len=4, window="stream")))
        >>> _ = rb.extend(TensorDict({"traj_ids": torch.zeros(10, dtype=torch.long)}, [10]))
        >>> _, info = rb.sample(return_info=True)   # windows 0-3 and 4-7 first, then one draw
        >>> info["index"][0].view(3, 4)[:2, 0].tolist(), rb.sampler.metrics()["online_queue"]
        ([0, 4], 0.0)
    """

    def __init__(self, sampler: Sampler):
        leaves = slice_leaves(sampler)
        if not leaves:
            raise TypeError(
                f"OnlineQueue needs imwm slice samplers (PrioritizedSliceSampler and composites "
                f"of them), got {type(sampler).__name__}"
            )
        rules = {(leaf.window, leaf.num_streams, leaf.max_capacity) for leaf in leaves}
        if len(rules) != 1:
            raise ValueError(
                f"the samplers under an OnlineQueue must share one (window, num_streams, "
                f"max_capacity), got {sorted(rules)}"
            )
        super().__init__({"replay": sampler}, slice_len=leaves[0].slice_len)
        self.inner = sampler
        is_gate = isinstance(sampler, TrendMixture)
        self.trend = sampler if is_gate else getattr(sampler, "trend", None)
        # the leaf whose stamps and valid mask tell whether a queued window can still be sampled
        self._ref = leaves[0]
        self.max_capacity = self._ref.max_capacity
        self._reset_queue()

    def _reset_queue(self) -> None:
        streams = self._ref.num_streams
        # (start, write stamp of the start) per window; the storage holds no more intact ones
        self._queue: deque[tuple[int, int]] = deque(
            maxlen=max(1, self.max_capacity // self.slice_len))
        self._cursor = [-1] * streams   # storage position where the ring's next window starts
        self._ahead = [0] * streams     # records written from the cursor on, not yet queued
        self.last_online = 0
        self._marked: torch.Tensor | None = None  # the last mark_update, repeated by extend

    # ------------------------------------------------------------------ writes
    def add(self, index: int) -> None:
        self.extend(torch.as_tensor([index]))

    def extend(self, index: torch.Tensor) -> None:
        super().extend(index)  # the leaves stamp the writes first
        index = PrioritizedSliceSampler._positions(index, self._ref.device)
        marked, self._marked = self._marked, None
        if marked is not None and marked.shape == index.shape and torch.equal(marked, index):
            return  # queued already, from the mark_update of the same write
        self._queue_writes(index)

    def mark_update(self, index, *, storage: Storage | None = None) -> None:
        super().mark_update(index, storage=storage)
        index = PrioritizedSliceSampler._positions(index, self._ref.device)
        self._queue_writes(index)
        self._marked = index

    def _queue_writes(self, index: torch.Tensor) -> None:
        """Queues the windows that the records written at ``index`` complete."""
        ref = self._ref
        if not index.numel():
            return
        t, size = self.slice_len, ref.ring_size
        ring = torch.div(index, size, rounding_mode="floor").clamp(max=ref.num_streams - 1)
        counts = torch.bincount(ring, minlength=ref.num_streams).tolist()  # one sync per write
        new, ends = [], []
        for r, n in enumerate(counts):
            if not n:
                continue
            if self._cursor[r] < 0:  # the ring's first write: its stream starts here
                self._cursor[r] = int(index[ring == r][0])
            self._ahead[r] += n
            base = r * size
            while self._ahead[r] >= t:
                # the window is intact iff what was written after it has not wrapped onto it
                if self._ahead[r] <= size:
                    new.append(self._cursor[r])
                    ends.append(base + (self._cursor[r] - base + t - 1) % size)
                self._cursor[r] = base + (self._cursor[r] - base + t) % size
                self._ahead[r] -= t
        if new:
            # queue in the order the windows were completed (their last record's write stamp)
            new = torch.tensor(new, device=ref.device)
            order = ref._stamp[torch.tensor(ends, device=ref.device)].argsort()
            new = new[order]
            self._queue.extend(zip(new.tolist(), ref._stamp[new].tolist()))

    # ------------------------------------------------------------------ sampling
    def _pop_online(self, storage: Storage, num: int) -> torch.Tensor:
        """Up to ``num`` queued starts that are still intact and valid, oldest first."""
        ref = self._ref
        ref._check_storage(storage)
        ref._refresh(storage)
        taken, count = [], 0
        while count < num and self._queue:
            # pop no more than can still be used, so nothing valid is dropped
            block = [self._queue.popleft() for _ in range(min(num - count, len(self._queue)))]
            starts = torch.tensor([b[0] for b in block], device=ref.device)
            stamps = torch.tensor([b[1] for b in block], device=ref.device)
            ok = (ref._stamp[starts] == stamps) & ref._valid[starts]
            taken.append(starts[ok])
            count += int(ok.sum())
        if not taken:
            return torch.zeros(0, dtype=torch.long, device=ref.device)
        return torch.cat(taken)

    def sample(self, storage: Storage, batch_size: int) -> tuple[tuple[torch.Tensor], dict]:
        self._adopt_buffer_key(storage)
        if batch_size % self.slice_len:
            raise RuntimeError(
                f"The batch-size must be divisible by the slice length, got "
                f"batch_size={batch_size} and slice_len={self.slice_len}."
            )
        num = batch_size // self.slice_len
        online = self._pop_online(storage, num)
        self.last_online = online.numel()
        self.last_counts = {"replay": num - online.numel()}
        index = slice_index(online, self.slice_len, self.max_capacity)
        infos: list[dict] = []
        rest = num - online.numel()
        if rest > 0:
            inner, inner_info = self.inner.sample(storage, rest * self.slice_len)
            inner = inner[0] if isinstance(inner, tuple) else inner
            index = torch.cat([index, inner.reshape(-1).to(index.device)])
            infos.append(inner_info)
        info = self._info(storage, index, infos)
        if self._count_visits:
            self.record_visits(index.view(-1, self.slice_len)[:, 0])
        return (index,), info

    # ------------------------------------------------------------------ state
    def metrics(self) -> dict[str, float]:
        out = dict(self.inner.metrics()) if hasattr(self.inner, "metrics") else {}
        out["online_queue"] = float(len(self._queue))
        total = self.last_online + self.last_counts.get("replay", 0)
        out["online_frac"] = self.last_online / total if total else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        starts, stamps = (list(x) for x in zip(*self._queue)) if self._queue else ([], [])
        out["online"] = {
            "starts": torch.tensor(starts, dtype=torch.long),
            "stamps": torch.tensor(stamps, dtype=torch.long),
            "cursor": torch.tensor(self._cursor, dtype=torch.long),
            "ahead": torch.tensor(self._ahead, dtype=torch.long),
            "last_online": self.last_online,
        }
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        online = state_dict["online"]
        cursor = [int(x) for x in online["cursor"].tolist()]
        if len(cursor) != self._ref.num_streams:
            raise ValueError(
                f"online queue state has {len(cursor)} streams, this sampler "
                f"{self._ref.num_streams}"
            )
        super().load_state_dict(state_dict)
        self._reset_queue()
        self._queue.extend(zip(online["starts"].tolist(), online["stamps"].tolist()))
        self._cursor = cursor
        self._ahead = [int(x) for x in online["ahead"].tolist()]
        self.last_online = int(online.get("last_online", 0))

    def _empty(self) -> None:
        super()._empty()
        self._reset_queue()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}, queued={len(self._queue)})"
