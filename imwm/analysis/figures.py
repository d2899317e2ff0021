"""The three boundary figures of SPEC.md section 3, from one rolled-out episode.

- ``boundary_grid.png``: the frames of a window, each with a bar underneath: READ red, COPY
  blue (and, where the true changes are known, a green tick above the bar);
- ``boundary_internal.png``: READ probability, seg_len / seg_num, abstract and observation KL,
  reward and frame change over time, READ steps shaded in every panel;
- ``boundary_fired.png``: only the frames where READ fired, with their time steps.

All three read a *trace*: a mapping of per-step arrays as produced by
``imwm.analysis.rollout`` (``frames [T, 3, H, W]`` uint8 or ``[T, H, W, 3]``, ``boundary``,
``read_prob``, ``seg_len``, ``seg_num``, ``kl_abs``, ``kl_obs``, ``reward``, ``frame_delta``,
optionally ``true_boundary``). Missing series are skipped with a note in the panel, never
invented. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from imwm.analysis._arrays import as_flags, to_numpy  # noqa: E402

__all__ = ["select_window", "plot_boundary_grid", "plot_boundary_internal", "plot_boundary_fired",
           "plot_all", "READ_COLOUR", "COPY_COLOUR", "TRUE_COLOUR"]

READ_COLOUR = (0.86, 0.16, 0.16)
COPY_COLOUR = (0.16, 0.32, 0.86)
TRUE_COLOUR = (0.10, 0.65, 0.20)
WINDOWS = ("start", "reward_or_delta")


def _hwc(frames: Any) -> np.ndarray:
    """Frames as ``[T, H, W, 3]`` float in [0, 1] (uint8 / 255; float clipped)."""
    arr = to_numpy(frames, "frames")
    if arr.ndim != 4:
        raise ValueError(f"frames must be [T, 3, H, W] or [T, H, W, 3], got shape {arr.shape}")
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 1, -1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def select_window(trace: Mapping[str, Any], length: int, window: str = "start") -> tuple[int, int]:
    """``(start, stop)`` of the steps to show.

    ``start``: the first ``length`` steps. ``reward_or_delta``: centred on the first salient
    event, which is the first non-zero reward, or, in an episode without reward, the largest
    frame change (step 0, which has no previous frame, excluded).
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    total = len(to_numpy(trace["boundary"], "boundary"))
    length = min(length, total)
    if window == "start":
        return 0, length
    centre = None
    if trace.get("reward") is not None:
        nonzero = np.flatnonzero(to_numpy(trace["reward"], "reward").reshape(total) != 0)
        if nonzero.size:
            centre = int(nonzero[0])
    if centre is None and trace.get("frame_delta") is not None:
        delta = to_numpy(trace["frame_delta"], "frame_delta").astype(np.float64).reshape(total)
        if np.isfinite(delta).any():
            centre = int(np.nanargmax(delta))
    if centre is None:
        centre = length // 2
    start = int(np.clip(centre - length // 2, 0, total - length))
    return start, start + length


def _frame_grid(images: np.ndarray, steps: np.ndarray, bars: list[tuple[float, float, float]] | None,
                true_marks: np.ndarray | None, title: str, legend: list[Patch], ncols: int):
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(7.0, 1.35 * ncols + 0.4), 1.8 * nrows + 0.9),
                             squeeze=False)
    height = images.shape[1] if n else 64
    bar_h = max(3, height // 10)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= n:
            continue
        img = images[k]
        if bars is not None:
            bar = np.broadcast_to(np.array(bars[k], np.float32), (bar_h, img.shape[1], 3))
            gap = np.ones((1, img.shape[1], 3), np.float32)
            img = np.concatenate([img, gap, bar], axis=0)
        ax.imshow(img, interpolation="nearest")
        label = f"t={int(steps[k])}"
        if true_marks is not None and true_marks[k]:
            label += " *"
        ax.set_title(label, fontsize=8, color=TRUE_COLOUR if true_marks is not None and true_marks[k] else "black")
    fig.suptitle(title, fontsize=10)
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if legend else 0, 1, 0.95), h_pad=0.8)
    return fig


def _legend(true_known: bool) -> list[Patch]:
    handles = [Patch(color=READ_COLOUR, label="READ (new segment)"),
               Patch(color=COPY_COLOUR, label="COPY (segment continues)")]
    if true_known:
        handles.append(Patch(color=TRUE_COLOUR, label="* = true change"))
    return handles


def plot_boundary_grid(trace: Mapping[str, Any], path: str, *, start: int = 0, stop: int | None = None,
                       ncols: int = 10, title: str = "") -> str:
    """Frames ``[start, stop)`` with a READ (red) / COPY (blue) bar under each; returns ``path``."""
    boundary = as_flags(trace["boundary"], "boundary")
    stop = len(boundary) if stop is None else stop
    images = _hwc(trace["frames"])[start:stop]
    flags = boundary[start:stop]
    true = trace.get("true_boundary")
    true_marks = as_flags(true, "true_boundary")[start:stop] if true is not None else None
    bars = [READ_COLOUR if f else COPY_COLOUR for f in flags]
    fig = _frame_grid(images, np.arange(start, stop), bars, true_marks,
                      title or f"Boundaries, steps {start}-{stop - 1} ({int(flags.sum())} READ)",
                      _legend(true_marks is not None), ncols)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_boundary_fired(trace: Mapping[str, Any], path: str, *, start: int = 0, stop: int | None = None,
                        ncols: int = 10, max_frames: int = 40, title: str = "") -> str:
    """Only the frames in ``[start, stop)`` where READ fired, labelled with their step."""
    boundary = as_flags(trace["boundary"], "boundary")
    stop = len(boundary) if stop is None else stop
    steps = start + np.flatnonzero(boundary[start:stop])
    shown = steps[:max_frames]
    true = trace.get("true_boundary")
    true_marks = as_flags(true, "true_boundary")[shown] if true is not None else None
    head = title or f"READ frames, steps {start}-{stop - 1}: {len(steps)} fired"
    if len(steps) > len(shown):
        head += f" (first {len(shown)} shown)"
    if len(shown) == 0:
        fig, ax = plt.subplots(figsize=(6, 1.6))
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"No READ fired in steps {start}-{stop - 1}", ha="center", va="center")
        fig.suptitle(head, fontsize=10)
    else:
        fig = _frame_grid(_hwc(trace["frames"])[shown], shown, None, true_marks, head,
                          _legend(True)[2:] if true_marks is not None else [], ncols)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(trace: Mapping[str, Any], key: str, start: int, stop: int) -> np.ndarray | None:
    value = trace.get(key)
    if value is None:
        return None
    arr = to_numpy(value, key).astype(np.float64)
    return arr.reshape(arr.shape[0], -1)[:, 0][start:stop]


def plot_boundary_internal(trace: Mapping[str, Any], path: str, *, start: int = 0,
                           stop: int | None = None, title: str = "") -> str:
    """Internal signals over time with READ steps shaded; returns ``path``."""
    boundary = as_flags(trace["boundary"], "boundary")
    stop = len(boundary) if stop is None else stop
    steps = np.arange(start, stop)
    reads = steps[boundary[start:stop]]
    true = trace.get("true_boundary")
    trues = steps[as_flags(true, "true_boundary")[start:stop]] if true is not None else None
    panels = [
        ("READ probability", [("read_prob", "posterior P(READ)", "black"),
                              ("detector_read_prob", "detector P(READ), before forcing", "tab:olive")], (-0.02, 1.02)),
        ("seg_len (steps)", [("seg_len", "seg_len (left axis)", "tab:purple"),
                             ("seg_num", "seg_num (right axis)", "tab:orange", "right")], None),
        ("KL (nats)", [("kl_abs", "abstract KL", "tab:red"), ("kl_obs", "observation KL", "tab:blue")], None),
        ("reward", [("reward", "reward", "tab:green")], None),
        ("frame change", [("frame_delta", "frame delta (mean |f_t - f_t-1|)", "tab:gray")], None),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.7 * len(panels) + 0.8), sharex=True)
    for ax, (ylabel, lines, ylim) in zip(axes, panels):
        for t in reads:
            ax.axvspan(t - 0.5, t + 0.5, color=READ_COLOUR, alpha=0.18, lw=0)
        if trues is not None:
            for t in trues:
                ax.axvline(t, color=TRUE_COLOUR, ls="--", lw=0.9)
        drawn = False
        handles_here = []
        for key, label, colour, *side in lines:
            y = _series(trace, key, start, stop)
            if y is None:
                continue
            target = ax
            if side == ["right"]:  # a counter on another scale (seg_num grows, seg_len resets)
                target = ax.twinx()
                target.set_ylabel(key, fontsize=9, color=colour)
            handles_here += target.plot(steps, y, color=colour, lw=1.2, marker=".", ms=3, label=label)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded for this model", transform=ax.transAxes,
                    ha="center", va="center", color="gray")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_ylabel(ylabel, fontsize=9)
        if drawn:
            ax.legend(handles=handles_here, loc="upper right", fontsize=7, framealpha=0.8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Patch(color=READ_COLOUR, alpha=0.3, label=f"READ steps ({len(reads)})")]
    if trues is not None:
        handles.append(plt.Line2D([], [], color=TRUE_COLOUR, ls="--", label="true change"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title or f"Boundary internals, steps {start}-{stop - 1}", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(trace: Mapping[str, Any], out_dir: str, *, length: int = 30, window: str = "start",
             title: str = "") -> dict[str, str]:
    """Write the three figures for the selected window into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    start, stop = select_window(trace, length, window)
    prefix = f"{title}: " if title else ""
    return {
        "boundary_grid": plot_boundary_grid(
            trace, os.path.join(out_dir, "boundary_grid.png"), start=start, stop=stop,
            title=f"{prefix}frames with boundary bar, steps {start}-{stop - 1}"),
        "boundary_internal": plot_boundary_internal(
            trace, os.path.join(out_dir, "boundary_internal.png"), start=start, stop=stop,
            title=f"{prefix}boundary internals, steps {start}-{stop - 1}"),
        "boundary_fired": plot_boundary_fired(
            trace, os.path.join(out_dir, "boundary_fired.png"), start=start, stop=stop,
            title=f"{prefix}READ frames, steps {start}-{stop - 1}: "
                  f"{int(as_flags(trace['boundary'], 'boundary')[start:stop].sum())} fired"),
    }
