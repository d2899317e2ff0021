"""Priority feedback of the slice samplers: TorchRL-style index / value inputs mapped onto slices.

A slice sampler's item is a slice *start*; its feedback arrives in the shapes TorchRL's buffers
and imwm's training loop produce: slice starts ``[B]``, the flat sample index ``[B * T]``, a
``[B, T]`` index, with one value per slice or per record (see
:class:`~imwm.replay.slices.PrioritizedSliceSampler`). :class:`SliceFeedbackMixin` turns these
into one finite value per start and hands it to the sampler's ``_apply_signal``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torchrl.data.replay_buffers.storages import Storage

from imwm.replay.compat import BufferPriorityMixin, reduce_rows

__all__ = ["SliceFeedbackMixin"]

# stored signals are float32: a larger finite loss would overflow to inf there
_MAX_SIGNAL = torch.finfo(torch.float32).max


class SliceFeedbackMixin(BufferPriorityMixin):
    """Feedback entry points of :class:`~imwm.replay.slices.PrioritizedSliceSampler`.

    ``update_priority`` (TorchRL's) and ``update_signals`` (imwm's) map their index onto slice
    starts and reduce per-record values per slice; subclasses implement :meth:`_apply_signal`,
    usually as :meth:`_finite_values` (the ``nan_policy``) then :meth:`_set_signal`.

    The class it is mixed into provides ``max_capacity``, ``slice_len``, ``signal_key``,
    ``nan_policy``, ``nonfinite_skipped``, ``device``, the per-start ``_signal`` /
    ``_has_signal`` and ``_stale``, and ``_refresh_mass``.
    """

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
        values = [torch.as_tensor(v, device=self.device).detach().reshape(-1).double() for v in values]
        n = values[0].numel()
        for v in values[1:]:
            if v.numel() != n:
                raise ValueError(f"got {v.numel()} values next to {n} values: give one set per slice")
        starts, per_record = self._slice_starts(index, n, records=records)
        if per_record:
            values = [reduce_rows(v.view(-1, self.slice_len), self.reduction) for v in values]
        return starts, values

    def _slice_starts(self, index: torch.Tensor, n: int, *, records: bool) -> tuple[torch.Tensor, bool]:
        """Slice starts that ``index`` names for ``n`` values, and whether the values are per record.

        Per record: ``T`` values per slice, to be reduced, rather than one (see :meth:`_per_slice`).
        """
        t = self.slice_len or 1
        if index.ndim == 2 and index.shape[-1] == t and t > 1:
            if n == index.numel() and n != index.shape[0]:
                return index[:, 0], True
            if n != index.shape[0]:
                raise ValueError(f"got a {tuple(index.shape)} slice index for {n} values")
            return index[:, 0], False
        index = index.reshape(-1)
        m = index.numel()
        if t > 1 and m == n * t:
            return index.view(n, t)[:, 0], False
        if m == n:
            per_record = records and self._is_flat_slices(index)
            return (index.view(-1, t)[:, 0] if per_record else index), per_record
        raise ValueError(
            f"got {m} indices for {n} values: give one index per value (slice starts), "
            f"the flat {n} x {t} slice index, or one value per record of a flat slice index"
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
