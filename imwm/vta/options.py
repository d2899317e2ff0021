"""Boundary options shared by both VTA variants: validation, schedules and the update counter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from imwm.errors import ConfigError, is_integer
from imwm.vta.boundary import check_boundary_options, force_scale_at, temperature_at

__all__ = ["BoundaryOptions", "BOUNDARY_OPTION_DEFAULTS", "BOUNDARY_SCHEDULES", "check_boundary_option_values"]

# Every option is a constructor kwarg of VTADynamics / VTAOriginal and a config key of the same name.
BOUNDARY_OPTION_DEFAULTS = dict(
    max_seg_len=10,
    max_seg_num=5,
    boundary_temp=1.0,
    boundary_temp_min=1.0,
    boundary_temp_anneal_rate=0.0,
    boundary_force_scale=10.0,
    boundary_force_schedule="constant",
    boundary_force_start=1.0,
    boundary_force_decay_updates=0,
    boundary_rate=0.0,
    boundary_scale=0.0,
)
BOUNDARY_SCHEDULES = ("constant", "linear", "exponential")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_boundary_option_values(options: Mapping[str, Any]) -> dict:
    """Checks boundary options (any subset; the rest take their defaults); returns all of them.

    Errors are :class:`~imwm.errors.ConfigError` with the bare option name as the key
    (``boundary_temp``): a builder puts the config group in front (``dynamics.boundary_temp``,
    ``vta.boundary_temp``) with :func:`imwm.errors.config_keys`.

    Example:
        >>> opts = check_boundary_option_values({"max_seg_len": 8.0, "boundary_temp": 0.5})
        >>> opts["max_seg_len"], opts["boundary_temp"], opts["max_seg_num"]  # 8.0 read as 8; a default
        (8, 0.5, 5)
        >>> check_boundary_option_values({"boundary_rate": 1.0})
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: boundary_rate: must be in [0, 1) (got 1.0)
    """
    unknown = sorted(set(options) - set(BOUNDARY_OPTION_DEFAULTS))
    if unknown:
        raise ConfigError(", ".join(unknown), f"unknown boundary options; valid: {sorted(BOUNDARY_OPTION_DEFAULTS)}")
    opts = {**BOUNDARY_OPTION_DEFAULTS, **options}
    for key in ("max_seg_len", "max_seg_num", "boundary_force_decay_updates"):
        value = opts[key]
        if isinstance(value, float) and value.is_integer():
            opts[key] = int(value)
    for key in ("max_seg_len", "max_seg_num"):
        value = opts[key]
        if not is_integer(value, 1):
            raise ConfigError(key, "must be an integer >= 1", value)
    for key in ("boundary_temp", "boundary_temp_min"):
        if not (_number(opts[key]) and opts[key] > 0):
            raise ConfigError(key, "must be a finite number > 0 (a Gumbel temperature)", opts[key])
    for key in ("boundary_temp_anneal_rate", "boundary_force_scale", "boundary_scale"):
        if not (_number(opts[key]) and opts[key] >= 0):
            raise ConfigError(key, "must be a finite number >= 0", opts[key])
    schedule = opts["boundary_force_schedule"]
    if schedule not in BOUNDARY_SCHEDULES:
        raise ConfigError("boundary_force_schedule", f"must be one of {list(BOUNDARY_SCHEDULES)}", schedule)
    decay = opts["boundary_force_decay_updates"]
    if not is_integer(decay, 0):
        raise ConfigError("boundary_force_decay_updates", "must be an integer >= 0", decay)
    if schedule != "constant":
        if decay < 1:
            raise ConfigError("boundary_force_decay_updates",
                              f"must be >= 1 with boundary_force_schedule={schedule}", decay)
        if not (_number(opts["boundary_force_start"]) and opts["boundary_force_start"] >= 0):
            raise ConfigError("boundary_force_start", "must be a finite number >= 0", opts["boundary_force_start"])
    rate = opts["boundary_rate"]
    if not (_number(rate) and 0.0 <= rate < 1.0):
        raise ConfigError("boundary_rate", "must be in [0, 1)", rate)
    if opts["boundary_scale"] > 0 and rate <= 0:
        raise ConfigError("boundary_rate", f"must be in (0, 1) when boundary_scale > 0 "
                          f"(boundary_scale={opts['boundary_scale']})", rate)
    return opts


class BoundaryOptions(nn.Module):
    """Holds the boundary options and turns the update counter into a temperature and force scale.

    The trainer (or agent) calls :meth:`set_progress` with the number of updates done; the counter
    is a buffer, so it is saved in ``state_dict`` and a restored model continues the schedules
    where they stopped. Options are validated here, with errors that name the option.

    Example:
        >>> class Detector(BoundaryOptions):
        ...     def __init__(self, **options):
        ...         super().__init__()
        ...         self._init_boundary_options(**options)
        >>> det = Detector(boundary_temp_min=0.5, boundary_temp_anneal_rate=0.01,
        ...                boundary_force_scale=0.0, boundary_force_schedule="linear",
        ...                boundary_force_decay_updates=100)
        >>> det.set_progress(50)   # exp(-0.01 * 50) = 0.6065; halfway from the start (1.0) to 0.0
        >>> round(det.current_temp, 4), det.current_force_scale, int(det.state_dict()["progress"])
        (0.6065, 0.5, 50)
    """

    def _init_boundary_options(self, **options) -> None:
        opts = check_boundary_option_values(options)
        check_boundary_options(
            max_seg_len=opts["max_seg_len"],
            max_seg_num=opts["max_seg_num"],
            force_scale=opts["boundary_force_scale"],
            temp=opts["boundary_temp"],
        )
        # evaluate both schedules once so a bad schedule option fails at construction
        force_scale_at(
            0,
            force_scale=opts["boundary_force_scale"],
            schedule=opts["boundary_force_schedule"],
            start=opts["boundary_force_start"],
            decay_updates=opts["boundary_force_decay_updates"],
        )
        temperature_at(
            0, temp=opts["boundary_temp"], temp_min=opts["boundary_temp_min"], anneal_rate=opts["boundary_temp_anneal_rate"]
        )
        for key, value in opts.items():
            setattr(self, key, value)
        self.register_buffer("progress", torch.zeros((), dtype=torch.long))

    def boundary_options(self) -> dict:
        """The options as a plain dict (config keys -> values)."""
        return {key: getattr(self, key) for key in BOUNDARY_OPTION_DEFAULTS}

    def set_progress(self, update: int) -> None:
        """Tell the model how many updates have been done (drives the force and temperature schedules)."""
        if update < 0:
            raise ValueError(f"update must be >= 0, got {update!r}")
        self.progress.fill_(int(update))

    @property
    def current_temp(self) -> float:
        return temperature_at(
            int(self.progress),
            temp=self.boundary_temp,
            temp_min=self.boundary_temp_min,
            anneal_rate=self.boundary_temp_anneal_rate,
        )

    @property
    def current_force_scale(self) -> float:
        return force_scale_at(
            int(self.progress),
            force_scale=self.boundary_force_scale,
            schedule=self.boundary_force_schedule,
            start=self.boundary_force_start,
            decay_updates=self.boundary_force_decay_updates,
        )
