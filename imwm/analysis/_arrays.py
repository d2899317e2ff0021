"""Input normalisation shared by the analysis functions.

Analysis code takes whatever a rollout produced (torch tensors with a trailing ``[..., 1]``,
numpy arrays, lists) and works on plain numpy. These helpers convert, squeeze the flag
dimension and reject malformed input with an error that names the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(value: Any, name: str) -> np.ndarray:
    """Return ``value`` as a numpy array (torch tensors are detached and moved to CPU)."""
    if value is None:
        raise ValueError(f"{name} must be an array, got None")
    if hasattr(value, "detach"):  # torch.Tensor without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def as_flags(value: Any, name: str, *, ndim: tuple[int, ...] = (1,)) -> np.ndarray:
    """Return a bool array of 0/1 flags; a trailing singleton dimension is squeezed.

    Raises:
        ValueError: if the values are not 0/1 (or bool), or the rank is not in ``ndim``.
    """
    arr = to_numpy(value, name)
    if arr.ndim >= 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s) "
                         f"(a trailing [..., 1] is allowed), got shape {tuple(arr.shape)}")
    if arr.dtype != np.bool_:
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            bad = arr[(arr != 0) & (arr != 1)].ravel()[0].item()  # a Python number prints as 2, not np.int64(2)
            raise ValueError(f"{name} must hold 0/1 flags, found value {bad!r}")
        arr = arr.astype(bool)
    return arr


def as_series(value: Any, name: str, length: int) -> np.ndarray:
    """Return a float64 1-D array of ``length`` steps (a trailing ``[..., 1]`` is squeezed)."""
    arr = to_numpy(value, name).astype(np.float64)
    if arr.ndim == 2 and arr.shape[-1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(f"{name} must have shape [{length}] (one value per step), "
                         f"got {tuple(arr.shape)}")
    return arr
