"""What imwm's samplers share to behave like TorchRL samplers inside TorchRL's replay buffers.

- :class:`BufferPriorityMixin`: the protocol of TorchRL's prioritised samplers as a
  ``TensorDictReplayBuffer`` drives it (``default_priority``, ``reduction``, ``priority_key``,
  ``update_priority(..., storage=...)``), with imwm's meaning of the values: the per-slice
  *signal* a sampler is prioritised by (a world-model loss, a KL), never a ready-made priority.
  The imwm samplers are registered as virtual subclasses of TorchRL's ``PrioritizedSampler``, so
  that ``TensorDictReplayBuffer.update_tensordict_priority`` hands them the update instead of
  skipping it.
- :func:`read_entry`: one storage entry at some positions, without gathering whole records.
- :func:`step_flags`: the per-step ``truncated`` / ``done`` / ``terminated`` / ``is_init`` flags
  that TorchRL's ``SliceSampler`` puts in a sample's info.
- :data:`TRAJ_KEY_CANDIDATES`, :data:`DEFAULT_END_KEY`: the automatic trajectory-key detection.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data.replay_buffers.storages import Storage

__all__ = [
    "BufferPriorityMixin",
    "DEFAULT_END_KEY",
    "REDUCTIONS",
    "TORCHRL_PRIORITY_KEY",
    "TRAJ_KEY_CANDIDATES",
    "owning_buffer",
    "read_entry",
    "reduce_rows",
    "replace_last",
    "step_flags",
]

# trajectory-id keys probed, in order, when no traj_key / end_key is given: a TorchRL collector's,
# imwm's record layout's, TorchRL datasets'
TRAJ_KEY_CANDIDATES: tuple[NestedKey, ...] = (("collector", "traj_ids"), "traj_ids", "episode")
# the end-of-trajectory flag probed next (TorchRL's SliceSampler default end_key)
DEFAULT_END_KEY: NestedKey = ("next", "done")
# TensorDictReplayBuffer's default priority_key
TORCHRL_PRIORITY_KEY = "td_error"
REDUCTIONS = ("max", "min", "mean", "median")


def replace_last(key: NestedKey, name: str) -> NestedKey:
    """``("next", "truncated") -> ("next", name)``; ``"truncated" -> name``.

    Example:
        >>> replace_last(("next", "truncated"), "done"), replace_last("truncated", "done")
        (('next', 'done'), 'done')
    """
    if isinstance(key, tuple):
        return key[:-1] + (name,)
    return name


def read_entry(storage: Storage, key: NestedKey, positions: torch.Tensor) -> torch.Tensor | None:
    """Values of the storage entry ``key`` at ``positions`` (``[n, ...]``), or ``None`` if absent.

    Reads the single entry straight from a ``TensorStorage``'s backing TensorDict rather than
    gathering whole records (which would copy every frame of every position).

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage
        >>> storage = LazyTensorStorage(4)
        >>> storage.set(torch.arange(4), TensorDict({"reward": torch.arange(4.0)}, [4]))
        >>> read_entry(storage, "reward", torch.tensor([3, 1])), read_entry(storage, "done", torch.tensor([0]))
        (tensor([3., 1.]), None)
    """
    data = getattr(storage, "_storage", None)
    if isinstance(data, TensorDictBase):
        values = data.get(key, None)
        if values is None:
            return None
        return values[positions.to(values.device)].to(positions.device)
    values = storage[positions]
    values = values.get(key, None) if hasattr(values, "get") else None
    return None if values is None else torch.as_tensor(values).to(positions.device)


def storage_has(storage: Storage, key: NestedKey) -> bool:
    """Whether the storage holds an entry ``key`` (reads no data from a ``TensorStorage``)."""
    data = getattr(storage, "_storage", None)
    if isinstance(data, TensorDictBase):
        return data.get(key, None) is not None
    if len(storage) == 0:
        return False
    row = storage[0]
    return hasattr(row, "get") and row.get(key, None) is not None


def storage_keys(storage: Storage) -> list:
    """The leaf keys of a storage's records, for error messages."""
    data = getattr(storage, "_storage", None)
    if isinstance(data, TensorDictBase):
        return list(data.keys(True, True))
    if len(storage) and hasattr(storage[0], "keys"):
        return list(storage[0].keys(True, True))
    return []


def _as_flags(values: torch.Tensor, n: int) -> torch.Tensor:
    values = values.reshape(n, -1)
    return values if values.dtype == torch.bool else values != 0


def step_flags(storage: Storage, index: torch.Tensor, num_slices: int, *,
               truncated_key: NestedKey | None, init_key: NestedKey | None) -> dict:
    """The per-step flags of TorchRL's ``SliceSampler`` info for ``num_slices`` slices ``index``.

    With ``truncated_key`` (e.g. ``("next", "truncated")``): ``truncated`` marks the last step of
    every slice, ``done`` (the sibling key) is the stored ``done`` OR ``truncated`` (just
    ``truncated`` when nothing is stored), ``terminated`` the stored flag (``False`` when absent);
    all ``[B * T, 1]`` bools (wider if the stored flags are). With ``init_key`` and that entry in
    the storage: the stored flags OR a mark on the first step of every slice. Only these entries
    are read, at the sampled positions.

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage
        >>> storage = LazyTensorStorage(6)
        >>> done = torch.tensor([[0], [1], [0], [0], [0], [0]], dtype=torch.bool)  # an episode ends at 1
        >>> storage.set(torch.arange(6), TensorDict({"next": {"done": done}}, [6]))
        >>> info = step_flags(storage, torch.arange(6), 2, truncated_key=("next", "truncated"), init_key=None)
        >>> [info["next", k].flatten().int().tolist() for k in ("truncated", "done", "terminated")]
        [[0, 0, 1, 0, 0, 1], [0, 1, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]]
    """
    n = index.numel()
    info: dict = {}
    if truncated_key is not None:
        truncated = torch.zeros(n, 1, dtype=torch.bool, device=index.device)
        truncated.view(num_slices, -1)[:, -1] = True
        done_key = replace_last(truncated_key, "done")
        terminated_key = replace_last(truncated_key, "terminated")
        done = read_entry(storage, done_key, index)
        done = truncated.clone() if done is None else _as_flags(done, n) | truncated
        terminated = read_entry(storage, terminated_key, index)
        terminated = torch.zeros_like(truncated) if terminated is None else _as_flags(terminated, n)
        info[truncated_key] = truncated
        info[done_key] = done
        info[terminated_key] = terminated
    if init_key is not None:
        stored = read_entry(storage, init_key, index)
        if stored is not None:
            stored = _as_flags(stored, n)
            marker = torch.zeros_like(stored)
            marker.view(num_slices, -1, stored.shape[-1])[:, 0] = True
            info[init_key] = stored | marker
    return info


def reduce_rows(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """``[B, T] -> [B]`` by ``reduction`` (``max``, ``min``, ``mean`` or ``median``).

    Example:
        >>> values = torch.tensor([[1.0, 3.0, 2.0], [0.0, 4.0, 8.0]])
        >>> reduce_rows(values, "max"), reduce_rows(values, "median")
        (tensor([3., 8.]), tensor([2., 4.]))
    """
    if reduction == "max":
        return values.max(-1).values
    if reduction == "min":
        return values.min(-1).values
    if reduction == "mean":
        return values.mean(-1)
    return values.median(-1).values


def owning_buffer(sampler: Any, storage: Storage | None) -> Any:
    """The replay buffer over ``storage`` whose sampler is ``sampler`` (``None`` if there is none).

    TorchRL buffers attach themselves to their storage (``storage.attach(buffer)``), which is how
    a write through one buffer reaches the samplers of every buffer sharing the storage.

    Example:
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl.data.replay_buffers.samplers import RandomSampler
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(4))
        >>> owning_buffer(rb.sampler, rb.storage) is rb, owning_buffer(RandomSampler(), rb.storage)
        (True, None)
    """
    for entity in getattr(storage, "_attached_entities", ()) or ():
        if entity.__dict__.get("_sampler") is sampler:
            return entity
    return None


class BufferPriorityMixin:
    """TorchRL's prioritised-sampler protocol, as ``TensorDictReplayBuffer`` drives it.

    ``TensorDictReplayBuffer`` calls ``sampler.update_priority(index, values, storage=...)`` from
    ``extend`` (when the written records hold its ``priority_key``), from
    ``update_tensordict_priority(td)`` (reading ``td[priority_key]``, one value per record of a
    flat sample or per slice of a ``[B, T]`` one, reduced over trailing dims with
    ``sampler.reduction``), from ``add`` and when a buffer is built over a filled storage. When
    no priority is given it passes ``sampler.default_priority`` instead. Here:

    - the buffer reads *this sampler's* ``priority_key``: a buffer left at TorchRL's default
      (``"td_error"``) is switched to it when the sampler first sees the buffer (its first write
      or call); a buffer set to another key raises. So a ``td_error`` entry is never read as the
      signal unless the sampler was built with ``priority_key="td_error"``.
    - "no priority given" is told apart from a value: reading ``default_priority`` (the
      priority of items without feedback, ``initial``) marks the next ``update_priority`` call,
      and that call, if it carries exactly that value, is TorchRL's default. For records just
      written (``add``) or a buffer being built over a filled storage it changes nothing (those
      records have no feedback: they already have the default priority). From
      ``update_tensordict_priority`` on a TensorDict without the ``priority_key`` entry it raises
      (TorchRL would silently reset the sampled items to the default priority).

    Subclasses define ``priority_key`` (``None``: not prioritised, every update raises),
    ``reduction``, ``initial`` and :meth:`_not_prioritised_error`.

    Example:
        >>> class LossPrioritised(BufferPriorityMixin):
        ...     priority_key, initial = "wm_loss", 0.5
        >>> sampler = LossPrioritised()
        >>> sampler.default_priority  # what TorchRL passes back when no priority is given ...
        0.5
        >>> [sampler._torchrl_default(0.5, storage=None) for _ in range(2)]  # ... recognised once
        [True, False]
    """

    priority_key: NestedKey | None = None
    reduction: str = "max"

    @property
    def default_priority(self) -> float:
        """Priority of items without feedback; TorchRL passes it back as "no priority given"."""
        self.__dict__["_default_read"] = True
        return float(getattr(self, "initial", 1.0))

    def _adopt_buffer_key(self, storage: Storage | None) -> None:
        """Makes the buffer owning this sampler read ``self.priority_key`` (see the class doc)."""
        if storage is None or self.priority_key is None:
            return
        buffer = owning_buffer(self, storage)
        key = getattr(buffer, "priority_key", None) if buffer is not None else None
        if key is None or key == self.priority_key:
            return
        if key == TORCHRL_PRIORITY_KEY:
            buffer.priority_key = self.priority_key
            return
        raise ValueError(
            f"the replay buffer reads priorities from {key!r} but {type(self).__name__} is prioritised by "
            f"{self.priority_key!r}: build the buffer with priority_key={self.priority_key!r} or the sampler "
            f"with priority_key={key!r}"
        )

    def _not_prioritised_error(self) -> Exception:
        return RuntimeError(
            f"{type(self).__name__} is not prioritised: it takes no priority feedback "
            f"(update_priority / update_tensordict_priority have nothing to update)"
        )

    def _torchrl_default(self, priority: Any, storage: Storage | None) -> bool:
        """Handles TorchRL's "no priority given" call; ``True`` if ``priority`` was one."""
        if not self.__dict__.pop("_default_read", False):
            return False
        value = torch.as_tensor(priority)
        if not bool((value == float(getattr(self, "initial", 1.0))).all()):
            return False
        buffer = owning_buffer(self, storage)
        building = buffer is not None and buffer.__dict__.get("_init_sampler") is not None
        if value.ndim == 0 or buffer is None or building:
            return True  # fresh records, or a buffer built over a filled storage: nothing to do
        if self.priority_key is None:
            raise self._not_prioritised_error()
        key = getattr(buffer, "priority_key", self.priority_key)
        raise KeyError(
            f"update_tensordict_priority got a TensorDict without {key!r}: {type(self).__name__} is "
            f"prioritised by that per-slice signal (priority_key={self.priority_key!r})"
        )
