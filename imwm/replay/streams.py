"""StreamWriter: one circular region of the storage per concurrently running trajectory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tensordict.utils import NestedKey
from torchrl.data.replay_buffers.writers import TensorDictRoundRobinWriter

from imwm.errors import check_integer
from imwm.replay.compat import TRAJ_KEY_CANDIDATES

__all__ = ["StreamWriter"]


class StreamWriter(TensorDictRoundRobinWriter):
    """Writes each trajectory into its own stream: a contiguous ring of ``capacity // num_streams``.

    With several envs collected batch by batch, a plain round-robin writer interleaves the envs'
    chunks (env 0's records of batch k, env 1's, env 0's of batch k+1, ...), so an episode is cut
    at every batch and no slice can be longer than a chunk. This writer keeps every trajectory's
    records consecutive in storage instead: each run of records with one ``traj_key`` value goes to
    the stream that trajectory holds, and a new trajectory takes a free stream (one whose last
    trajectory ended with ``last_key`` set) or else the least recently written one. Slices then
    only break at episode ends and at each stream's own write head (the samplers see heads as a
    drop of the write stamp, see :class:`~imwm.replay.slices.PrioritizedSliceSampler`).

    With ``num_streams`` = number of envs, no stream ever has to take over an open trajectory.
    Records that carry ``stream_key`` (imwm's record layout adds it, :mod:`imwm.training.layout`)
    choose their stream themselves: each env then always writes the same stream, whichever
    order the batches of several collector workers arrive in. The key is not stored.
    Storage positions past ``num_streams * (capacity // num_streams)`` stay unused, and until every
    ring is full ``len(buffer)`` may count unwritten rows: it covers the highest row written.

    Args:
        num_streams: number of streams (>= 1), e.g. the number of envs.
        traj_key: record key of the trajectory id. By default the first of
            ``("collector", "traj_ids")`` (TorchRL collectors), ``"traj_ids"`` (imwm's record
            layout) and ``"episode"`` present in the first written batch, as the slice samplers
            detect it.
        last_key: boolean record key marking the last record of a trajectory (optional in the
            data; without it streams are only reclaimed least-recently-used).
        stream_key: integer record key naming each record's stream (in ``[0, num_streams)``);
            when the data holds it, it decides the stream instead of the trajectory bookkeeping.

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), writer=StreamWriter(2))
        >>> rb.extend(TensorDict({"traj_ids": torch.tensor([0, 0, 1, 1])}, [4])).tolist()
        [0, 1, 4, 5]
        >>> rb.extend(TensorDict({"traj_ids": torch.tensor([0, 1])}, [2])).tolist()
        [2, 6]
        >>> rb.extend(TensorDict({"traj_ids": torch.tensor([7]), "stream": torch.tensor([1])}, [1])).tolist()
        [7]
    """

    def __init__(self, num_streams: int, *, traj_key: NestedKey | None = None,
                 last_key: NestedKey | None = "is_last", stream_key: NestedKey | None = "stream"):
        check_integer("num_streams", num_streams)
        super().__init__()
        self.num_streams = num_streams
        self.traj_key = traj_key
        self.last_key = last_key
        self.stream_key = stream_key
        self._reset_streams()

    def _reset_streams(self) -> None:
        e = self.num_streams
        self._offsets = [0] * e          # next write offset inside each ring
        self._open = [-1] * e            # trajectory currently written to each stream (-1: free)
        self._last_write = [-1] * e      # write count at the stream's last write (LRU)
        self._filled: list[int | None] = [0] * e  # rows of each ring written so far (None: unknown)

    def _ring_size(self, data) -> int:
        capacity = self._storage._max_size_along_dim0(batched_data=data)
        size = capacity // self.num_streams
        if size < 1:
            raise ValueError(
                f"capacity {capacity} is smaller than num_streams={self.num_streams}"
            )
        return size

    def _stream_for(self, traj: int) -> int:
        if traj in self._open:
            return self._open.index(traj)
        free = [s for s in range(self.num_streams) if self._open[s] == -1]
        if free:
            return min(free, key=lambda s: self._last_write[s])
        return min(range(self.num_streams), key=lambda s: self._last_write[s])

    def extend(self, data) -> torch.Tensor:
        n = len(data)
        if n == 0:
            raise RuntimeError("Expected at least one element in extend.")
        size = self._ring_size(data)
        if self.traj_key is None:
            found = next((k for k in TRAJ_KEY_CANDIDATES if data.get(k, None) is not None), None)
            if found is None:
                raise KeyError(
                    f"StreamWriter found no trajectory id in the data (looked for "
                    f"{list(TRAJ_KEY_CANDIDATES)}); pass traj_key= (keys: {list(data.keys(True, True))})"
                )
            self.traj_key = found
        ids = data.get(self.traj_key, None)
        if ids is None:
            raise KeyError(f"StreamWriter needs the trajectory id {self.traj_key!r} in the data")
        ids = ids.reshape(n, -1)[:, 0].cpu()
        last = data.get(self.last_key, None) if self.last_key is not None else None
        if last is not None:
            last = last.reshape(n, -1)[:, 0].bool().cpu()
        streams = data.get(self.stream_key, None) if self.stream_key is not None else None
        change = ids[1:] != ids[:-1]
        if streams is not None:
            streams = streams.reshape(n, -1)[:, 0].cpu()
            if int(streams.min()) < 0 or int(streams.max()) >= self.num_streams:
                raise ValueError(f"{self.stream_key!r} holds streams {sorted(set(streams.tolist()))}, "
                                 f"outside [0, num_streams={self.num_streams})")
            change |= streams[1:] != streams[:-1]
            stored = data.exclude(self.stream_key)
        else:
            stored = data
        cut = (torch.nonzero(change).reshape(-1) + 1).tolist()
        bounds = list(zip([0] + cut, cut + [n]))
        index = torch.empty(n, dtype=torch.long)
        ids_list = ids.tolist()
        for a, b in bounds:  # a few runs per batch: one per env and per episode boundary
            traj = int(ids_list[a])
            s = int(streams[a]) if streams is not None else self._stream_for(traj)
            self._open[s] = traj
            index[a:b] = s * size + (self._offsets[s] + torch.arange(b - a)) % size
            self._offsets[s] = (self._offsets[s] + b - a) % size
            self._filled[s] = size if self._filled[s] is None else min(size, self._filled[s] + b - a)
            self._last_write[s] = self._write_count + b
            if last is not None and bool(last[b - 1]):
                self._open[s] = -1  # the episode ended: the stream is free
        index = index.to(getattr(data, "device", None) or "cpu")
        self._write_count += n
        data.set("index", index)
        if stored is not data:
            stored.set("index", index)
        # rows are filled ring by ring, not as a prefix: the storage length must cover the highest
        # row written (so len(buffer) may count unwritten rows of rings that are not full)
        self._storage.set(index, stored)
        self._update_storage_len_for_write_at(index)
        self._bump_generation(index, stored)
        index = self._replicate_index(index)
        self._mark_update_entities(index)
        return index

    def add(self, data) -> int:
        return int(self.extend(data.unsqueeze(0))[0])

    def written_rows(self) -> list[tuple[int, int]]:
        """Storage rows that hold records, as ``[start, end)`` ranges (one per ring).

        Rings fill from their start, so each ring's written rows are one range; the rest of the
        storage is whatever the allocation left there. A ring of a state saved before this record
        was kept counts as full.

        Example:
            >>> from tensordict import TensorDict
            >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
            >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), writer=StreamWriter(2))
            >>> _ = rb.extend(TensorDict({"traj_ids": torch.tensor([0, 0, 0, 1])}, [4]))
            >>> rb.writer.written_rows()
            [(0, 3), (4, 5)]
        """
        if not self._storage.initialized:
            return []
        size = self._storage._max_size_along_dim0() // self.num_streams
        return [(s * size, s * size + (size if f is None else f)) for s, f in enumerate(self._filled)]

    def write_at(self, index, data):
        raise RuntimeError("StreamWriter decides where records go; write_at is not supported")

    # ------------------------------------------------------------------ state
    def _stream_state(self) -> dict[str, Any]:
        return {"num_streams": self.num_streams, "offsets": list(self._offsets),
                "open": list(self._open), "last_write": list(self._last_write),
                "filled": [-1 if f is None else f for f in self._filled]}

    def _load_stream_state(self, state: dict[str, Any]) -> None:
        if int(state["num_streams"]) != self.num_streams:
            raise ValueError(
                f"state has num_streams={state['num_streams']}, this writer {self.num_streams}"
            )
        self._offsets = [int(x) for x in state["offsets"]]
        self._open = [int(x) for x in state["open"]]
        self._last_write = [int(x) for x in state["last_write"]]
        filled = state.get("filled", [-1] * self.num_streams)  # absent from older states: unknown
        self._filled = [None if int(x) < 0 else int(x) for x in filled]

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["streams"] = self._stream_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._load_stream_state(state_dict["streams"])

    def dumps(self, path) -> None:
        super().dumps(path)
        with open(Path(path).absolute() / "streams.json", "w") as f:
            json.dump(self._stream_state(), f)

    def loads(self, path) -> None:
        super().loads(path)
        with open(Path(path).absolute() / "streams.json") as f:
            self._load_stream_state(json.load(f))

    def _empty(self, empty_write_count: bool = True) -> None:
        super()._empty(empty_write_count)
        self._reset_streams()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_streams={self.num_streams}, open={self._open})"
