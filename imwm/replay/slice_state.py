"""Checkpoints of the slice samplers: ``state_dict`` / ``load_state_dict`` and ``dumps`` / ``loads``.

A saved state holds the per-position statistics (visits, signal, validity, write stamps), the
writes not yet folded into the valid mask and the sampler's hyper-parameters (``hyper``, which
subclasses extend with their own). The sum tree is not saved: it is a function of the
statistics and is rebuilt at load, in one O(N) pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["SliceStateMixin"]


class SliceStateMixin:
    """Saving and resuming :class:`~imwm.replay.slices.PrioritizedSliceSampler`.

    A state saved under another window rule or ring layout loads too: its valid mask is then
    recomputed from the stamps and the storage at the next sample.

    The class it is mixed into provides the options, the per-position statistics, ``_tree``,
    ``_priority``, ``_flush_stale`` and ``_set_slice_len``.
    """

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
        self._check_saved(state_dict)
        self._load_stats(state_dict)
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
        everything = torch.arange(self.max_capacity, device=self.device)
        mass = torch.where(self._valid, self._priority(everything), 0.0)
        self._tree.set_all(mass)

    def _check_saved(self, state_dict: dict[str, Any]) -> None:
        """Raises unless ``state_dict`` is a compatible sampler's; a saved length fixes ours."""
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

    def _load_stats(self, state_dict: dict[str, Any]) -> None:
        """Takes the per-position statistics and pending writes of ``state_dict`` onto our device."""
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

    def dumps(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "sampler_state.pt")

    def loads(self, path) -> None:
        state = torch.load(Path(path) / "sampler_state.pt", weights_only=True)
        self.load_state_dict(state)
