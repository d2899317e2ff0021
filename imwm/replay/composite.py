"""Base of samplers that split each batch between named child samplers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchrl.data.replay_buffers.samplers import PrioritizedSampler, Sampler
from torchrl.data.replay_buffers.storages import Storage

from imwm.replay.compat import BufferPriorityMixin
from imwm.replay.slices import PrioritizedSliceSampler

__all__ = ["CompositeSampler", "slice_leaves"]


def slice_leaves(sampler: Sampler) -> list[PrioritizedSliceSampler]:
    """The :class:`~imwm.replay.slices.PrioritizedSliceSampler` leaves of a (composite) sampler.

    Example:
        >>> from torchrl.data.replay_buffers.samplers import SliceSampler
        >>> from imwm.replay import CuriousSampler, MixtureSampler
        >>> curious = CuriousSampler(16, slice_len=4)
        >>> mix = MixtureSampler({"curious": curious, "torchrl": SliceSampler(slice_len=4)},
        ...                      {"curious": 0.5, "torchrl": 0.5})
        >>> slice_leaves(mix) == [curious], slice_leaves(SliceSampler(slice_len=4))
        (True, [])
    """
    if isinstance(sampler, PrioritizedSliceSampler):
        return [sampler]
    if isinstance(sampler, CompositeSampler):
        return [leaf for child in sampler.children.values() for leaf in slice_leaves(child)]
    return []


class CompositeSampler(BufferPriorityMixin, Sampler):
    """Routes writes, feedback, state and metrics to named children; concatenates their slices.

    Children are sequence samplers with the same ``slice_len`` (imwm's samplers, or TorchRL's
    ``SliceSampler``); each returns ``(index_tuple, info)`` for its share of the batch, and the
    shares are concatenated slice after slice, so ``info["index"].view(B, T)[:, 0]`` still gives
    the slice starts. Visit counts: the outermost composite counts every sampled start in every
    child that keeps counts (an item replayed through the uniform share was still trained on).
    The per-step info flags (``truncated`` / ``done`` / ``terminated``, see
    :class:`~imwm.replay.slices.PrioritizedSliceSampler`) are read once, by the outermost
    composite, for the whole batch, with the keys of its first imwm leaf.

    Writes reach every child, through ``extend`` and through TorchRL's ``mark_update`` (writes
    made by another buffer sharing the storage). Priority feedback through TorchRL's
    ``update_priority`` / ``update_tensordict_priority`` goes to every child prioritised by the
    signal (all must share one ``priority_key``); :meth:`update_signals` takes several signals.

    Subclasses implement :meth:`_counts` (slices per child for a batch).

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from imwm.replay import CuriousSampler, UniformSliceSampler
        >>> class Split(CompositeSampler):
        ...     def _counts(self, num_slices):
        ...         return {"uniform": 1, "curious": num_slices - 1}
        >>> mix = Split({"uniform": UniformSliceSampler(8, slice_len=4),
        ...              "curious": CuriousSampler(8, slice_len=4)}, slice_len=4)
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), sampler=mix, batch_size=3 * 4)
        >>> ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])          # episodes of 3 and 5 records
        >>> _ = rb.extend(TensorDict({"traj_ids": ids, "t": torch.arange(8)}, [8]))
        >>> starts = rb.sample()["t"].view(3, 4)[:, 0]
        >>> mix.last_counts, sorted(set(starts.tolist()))         # 3 and 4: the only valid starts
        ({'uniform': 1, 'curious': 2}, [3, 4])
    """

    def __init__(self, children: dict[str, Sampler], *, slice_len: int):
        if not children:
            raise ValueError("a composite sampler needs at least one child")
        if slice_len is None:
            raise ValueError(
                "the samplers of a composite need a fixed slice_len (num_slices fixes the length only at "
                "the first batch): build them with slice_len="
            )
        for name, child in children.items():
            if not isinstance(child, Sampler):
                raise TypeError(f"child {name!r} must be a torchrl Sampler, got {type(child)}")
            child_len = getattr(child, "slice_len", None)
            if child_len != slice_len:
                raise ValueError(
                    f"child {name!r} has slice_len={child_len}, the mixture slice_len={slice_len}"
                )
            if hasattr(child, "_count_visits"):
                child._count_visits = False
            if hasattr(child, "_emit_info"):
                child._emit_info = False
        self.children = dict(children)
        self.slice_len = int(slice_len)
        self._count_visits = True
        self._emit_info = True
        self._rng_generator = None
        self.last_counts: dict[str, int] = {name: 0 for name in self.children}

    # the replay buffer sets `sampler._rng`; the children must draw from the same generator
    @property
    def _rng(self):
        return self.__dict__.get("_rng_generator")

    @_rng.setter
    def _rng(self, generator):
        self.__dict__["_rng_generator"] = generator
        for child in self.__dict__.get("children", {}).values():
            child._rng = generator

    def _counts(self, num_slices: int) -> dict[str, int]:
        raise NotImplementedError

    # ------------------------------------------------------------------ writes
    def add(self, index: int) -> None:
        for child in self.children.values():
            child.add(index)

    def extend(self, index: torch.Tensor) -> None:
        for child in self.children.values():
            child.extend(index)

    def mark_update(self, index, *, storage: Storage | None = None) -> None:
        """Forwards TorchRL's write notice (any buffer sharing the storage) to every child."""
        self._adopt_buffer_key(storage)
        for child in self.children.values():
            child.mark_update(index, storage=storage)

    # ------------------------------------------------------------------ sampling
    def _sampleable_count(self, storage: Storage, batch_size: int):
        counts = [child._sampleable_count(storage, batch_size) for child in self.children.values()]
        return min(int(c) for c in counts)

    def sample(self, storage: Storage, batch_size: int) -> tuple[tuple[torch.Tensor], dict]:
        self._adopt_buffer_key(storage)
        if batch_size % self.slice_len:
            raise RuntimeError(
                f"The batch-size must be divisible by the slice length, got "
                f"batch_size={batch_size} and slice_len={self.slice_len}."
            )
        counts = self._counts(batch_size // self.slice_len)
        self.last_counts = dict(counts)
        indices, infos = [], []
        for name, child in self.children.items():
            if counts.get(name, 0) <= 0:
                continue
            index, info = child.sample(storage, counts[name] * self.slice_len)
            if isinstance(index, tuple):
                if len(index) != 1:
                    raise RuntimeError(f"child {name!r} returned a {len(index)}-D index")
                index = index[0]
            indices.append(index.reshape(-1))
            infos.append(info)
        index = torch.cat(indices)
        info = self._info(storage, index, infos)
        if self._count_visits:
            self.record_visits(index.view(-1, self.slice_len)[:, 0])
        return (index,), info

    def _info(self, storage: Storage, index: torch.Tensor, infos: list[dict]) -> dict:
        """The batch's info: the per-step flags of the whole ``index`` (outermost composite)."""
        if not self._emit_info:
            return {}
        leaves = slice_leaves(self)
        if leaves:
            return leaves[0].step_flags(storage, index)
        # children of another kind (TorchRL's SliceSampler) made their own: concatenate
        common = set.intersection(*(set(i.keys()) for i in infos)) if infos else set()
        return {key: torch.cat([torch.as_tensor(i[key]) for i in infos]) for key in common}

    def record_visits(self, starts: torch.Tensor) -> None:
        for child in self.children.values():
            if hasattr(child, "record_visits"):
                child.record_visits(starts)

    # ------------------------------------------------------------------ feedback
    def update_signals(self, index, signals) -> None:
        """Gives every child the per-sequence signals it reads (``model_loss``, ``kl``, ...).

        Feedback goes to all children, not just the one that drew the slice: a loss or KL is a
        fact about the item, whichever share replayed it.
        """
        for child in self.children.values():
            if hasattr(child, "update_signals"):
                child.update_signals(index, signals)

    def _signal_keys(self) -> set[str]:
        keys = set()
        for child in self.children.values():
            if isinstance(child, CompositeSampler):
                keys |= child._signal_keys()
            elif getattr(child, "signal_key", None) is not None:
                keys.add(child.signal_key)
        return keys

    def _prioritised_leaves(self) -> list[PrioritizedSliceSampler]:
        return [leaf for leaf in slice_leaves(self) if leaf.signal_key is not None]

    @property
    def priority_key(self):
        """The TensorDict entry TorchRL's buffer reads the signal from (``None``: none or several)."""
        keys = {leaf.priority_key for leaf in self._prioritised_leaves()}
        return keys.pop() if len(keys) == 1 else None

    @property
    def reduction(self) -> str:
        leaves = self._prioritised_leaves()
        return leaves[0].reduction if leaves else "max"

    def update_priority(self, index, priority, *, storage: Storage | None = None) -> None:
        """TorchRL-style feedback: allowed when all prioritised children read the same signal.

        Each prioritised child maps ``index`` / ``priority`` to its slices (slice starts, the flat
        sample index, or one value per record of it; see
        :class:`~imwm.replay.slices.PrioritizedSliceSampler`).
        """
        if self._torchrl_default(priority, storage):
            return
        self._adopt_buffer_key(storage)
        keys = self._signal_keys()
        if not keys:
            raise self._not_prioritised_error()
        if len(keys) != 1:
            raise ValueError(
                f"{type(self).__name__}.update_priority is ambiguous: its children read the "
                f"signals {sorted(keys)}; call update_signals(index, {{name: values}}) instead"
            )
        for child in self.children.values():
            # storage tells the children that a TorchRL buffer is calling (per-record values)
            if isinstance(child, CompositeSampler) and child._signal_keys():
                child.update_priority(index, priority, storage=storage)
            elif getattr(child, "signal_key", None) is not None:
                child.update_priority(index, priority, storage=storage)

    # ------------------------------------------------------------------ state
    def metrics(self) -> dict[str, float]:
        out = {}
        total = sum(self.last_counts.values())
        for name, child in self.children.items():
            if total:
                out[f"{name}/batch_frac"] = self.last_counts.get(name, 0) / total
            if hasattr(child, "metrics"):
                for key, value in child.metrics().items():
                    out[f"{name}/{key}"] = value
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"children": {name: child.state_dict() for name, child in self.children.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["children"]
        if set(saved) != set(self.children):
            raise ValueError(
                f"state has children {sorted(saved)}, this sampler {sorted(self.children)}"
            )
        for name, child in self.children.items():
            child.load_state_dict(saved[name])

    def _empty(self) -> None:
        for child in self.children.values():
            child._empty()

    def dumps(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "sampler_state.pt")

    def loads(self, path) -> None:
        self.load_state_dict(torch.load(Path(path) / "sampler_state.pt", weights_only=True))

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_rng", None)
        state["_rng_generator"] = None
        return state

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.children.items())
        return f"{type(self).__name__}({inner})"


# see the registration of PrioritizedSliceSampler: TorchRL's buffer then hands priority updates
# to composites too, which route them to their prioritised children (or raise)
PrioritizedSampler.register(CompositeSampler)
