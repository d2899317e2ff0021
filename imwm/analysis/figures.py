"""Boundary figures from one rolled-out episode: where VTA's READ fires, and why.

Runs with image observations get three figures:

- ``boundary_grid.png``: the frames of a window, each with a bar underneath: READ red, COPY
  blue (and, where the true changes are known, a green tick above the bar);
- ``boundary_internal.png``: READ probability, seg_len / seg_num, abstract and observation KL,
  reward and frame change over time, READ steps shaded in every panel;
- ``boundary_fired.png``: only the frames where READ fired, with their time steps.

Runs with vector observations (``env=cartpole``: no frames to show) get
``boundary_timeline.png`` instead of the two frame figures: every observation component over
time above a READ / COPY bar, next to the same ``boundary_internal.png``;
:func:`skipped_figures` says, one line each, why the frame figures were not drawn.

All read a *trace*: a mapping of per-step arrays as produced by ``imwm.analysis.rollout``
(``frames [T, 3, H, W]`` uint8 or ``[T, H, W, 3]``, or ``[T, D]`` observation vectors,
``boundary``, ``read_prob``, ``seg_len``, ``seg_num``, ``kl_abs``, ``kl_obs``, ``reward``,
``frame_delta``, optionally ``true_boundary``). Missing series are skipped with a note in the
panel, never invented. Matplotlib runs headless (Agg).
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
           "plot_boundary_timeline", "plot_all", "has_frames", "skipped_figures", "READ_COLOUR",
           "COPY_COLOUR", "TRUE_COLOUR"]

READ_COLOUR = (0.86, 0.16, 0.16)
COPY_COLOUR = (0.16, 0.32, 0.86)
TRUE_COLOUR = (0.10, 0.65, 0.20)
WINDOWS = ("start", "reward_or_delta")


def has_frames(trace: Mapping[str, Any]) -> bool:
    """Whether the trace's observations are images (``[T, C, H, W]`` or ``[T, H, W, C]`` with
    C = 1 or 3), i.e. whether the frame figures can be drawn.

    Example:
        >>> has_frames({"frames": np.zeros((5, 3, 8, 8), np.uint8)})
        True
        >>> has_frames({"frames": np.zeros((5, 4))}), has_frames({})  # vectors; nothing recorded
        (False, False)
    """
    frames = trace.get("frames")
    if frames is None:
        return False
    shape = tuple(to_numpy(frames, "frames").shape)
    return len(shape) == 4 and (shape[1] in (1, 3) or shape[-1] in (1, 3))


def skipped_figures(trace: Mapping[str, Any]) -> dict[str, str]:
    """``{figure file: one-line reason}`` for the figures :func:`plot_all` leaves out of this trace
    (the frame figures when the observations are not images); empty when all are drawn.

    Example:
        >>> skipped = skipped_figures({"frames": np.zeros((5, 4))})  # 5 steps of 4-vectors
        >>> sorted(skipped)
        ['boundary_fired.png', 'boundary_grid.png']
        >>> skipped["boundary_grid.png"].split(";")[0]
        "it shows frames and this run's observations are vectors of shape (4,), not images"
        >>> skipped_figures({"frames": np.zeros((5, 3, 8, 8), np.uint8)})
        {}
    """
    if has_frames(trace):
        return {}
    frames = trace.get("frames")
    what = ("no observations were recorded" if frames is None else
            f"this run's observations are vectors of shape {tuple(to_numpy(frames, 'frames').shape[1:])}, "
            f"not images")
    return {
        "boundary_grid.png": f"it shows frames and {what}; boundary_timeline.png shows the observation "
                             f"over time with the READ / COPY bar instead",
        "boundary_fired.png": f"it shows the frames where READ fired and {what}; the READ steps are shaded "
                              f"in boundary_timeline.png and boundary_internal.png",
    }


def _hwc(frames: Any) -> np.ndarray:
    """Frames as ``[T, H, W, 3]`` float in [0, 1] (uint8 / 255; float clipped)."""
    arr = to_numpy(frames, "frames")
    if arr.ndim != 4:
        raise ValueError(f"frames must be images [T, 3, H, W] or [T, H, W, 3], got shape {arr.shape} "
                         f"(vector observations: plot_boundary_timeline draws them)")
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

    Example:
        >>> trace = {"boundary": np.zeros(10), "reward": np.eye(10)[7]}  # one reward, at step 7
        >>> select_window(trace, 4), select_window(trace, 50)  # the first steps, at most all
        ((0, 4), (0, 10))
        >>> select_window(trace, 4, "reward_or_delta")  # centred on step 7
        (5, 9)
        >>> select_window(trace, 4, "end")
        Traceback (most recent call last):
        ...
        ValueError: window must be one of ('start', 'reward_or_delta'), got 'end'
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
        ("frame change", [("frame_delta", "frame delta (mean |f_t - f_t-1|)", "tab:gray")], None)
        if has_frames(trace) else
        ("obs. change", [("frame_delta", "observation change (mean |o_t - o_t-1|)", "tab:gray")], None),
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


def plot_boundary_timeline(trace: Mapping[str, Any], path: str, *, start: int = 0, stop: int | None = None,
                           max_lines: int = 12, title: str = "") -> str:
    """The observation over ``[start, stop)`` above a READ (red) / COPY (blue) bar: the frame grid
    of a run without frames. Up to ``max_lines`` components are drawn as lines (each scaled to
    its own range in the window), more as a heat map; READ steps are shaded. Returns ``path``."""
    boundary = as_flags(trace["boundary"], "boundary")
    stop = len(boundary) if stop is None else stop
    steps = np.arange(start, stop)
    flags = boundary[start:stop]
    obs = to_numpy(trace["frames"], "frames").astype(np.float64)
    obs = obs.reshape(obs.shape[0], -1)[start:stop]
    true = trace.get("true_boundary")
    true_marks = as_flags(true, "true_boundary")[start:stop] if true is not None else None
    fig, (ax, bar) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True,
                                  gridspec_kw={"height_ratios": [5, 1]})
    lo, hi = np.nanmin(obs, axis=0), np.nanmax(obs, axis=0)
    scaled = (obs - lo) / np.where(hi > lo, hi - lo, 1.0)
    if obs.shape[1] <= max_lines:
        for d in range(obs.shape[1]):
            ax.plot(steps, scaled[:, d] + 1.1 * d, lw=1.2, marker=".", ms=3,
                    label=f"obs[{d}] [{lo[d]:.3g}, {hi[d]:.3g}]")
        ax.set_yticks([])
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        ax.set_ylabel("observation (each scaled\nto its range)", fontsize=9)
    else:
        ax.imshow(scaled.T, aspect="auto", interpolation="nearest", cmap="viridis",
                  extent=(start - 0.5, stop - 0.5, obs.shape[1] - 0.5, -0.5))
        ax.set_ylabel("observation component", fontsize=9)
    for t in steps[flags]:
        ax.axvspan(t - 0.5, t + 0.5, color=READ_COLOUR, alpha=0.15, lw=0)
    if true_marks is not None:
        for t in steps[true_marks]:
            ax.axvline(t, color=TRUE_COLOUR, ls="--", lw=0.9)
    colours = np.array([READ_COLOUR if f else COPY_COLOUR for f in flags], np.float32)[None]
    bar.imshow(colours, aspect="auto", interpolation="nearest", extent=(start - 0.5, stop - 0.5, 0, 1))
    bar.set_yticks([])
    bar.set_xlabel("time step")
    bar.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(handles=_legend(true_marks is not None), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or f"Observation and boundaries, steps {start}-{stop - 1} ({int(flags.sum())} READ)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(trace: Mapping[str, Any], out_dir: str, *, length: int = 30, window: str = "start",
             title: str = "") -> dict[str, str]:
    """Write the figures for the selected window into ``out_dir``; returns ``{name: path}``.

    Image observations: ``boundary_grid``, ``boundary_internal``, ``boundary_fired``. Vector
    observations: ``boundary_timeline`` and ``boundary_internal`` (:func:`skipped_figures` says
    why the frame figures are left out). If drawing fails, an ``out_dir`` created here is not
    left behind empty.
    """
    start, stop = select_window(trace, length, window)
    prefix = f"{title}: " if title else ""
    fired = int(as_flags(trace["boundary"], "boundary")[start:stop].sum())
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    try:
        if not has_frames(trace):
            return {
                "boundary_timeline": plot_boundary_timeline(
                    trace, os.path.join(out_dir, "boundary_timeline.png"), start=start, stop=stop,
                    title=f"{prefix}observation with boundary bar, steps {start}-{stop - 1} ({fired} READ)"),
                "boundary_internal": plot_boundary_internal(
                    trace, os.path.join(out_dir, "boundary_internal.png"), start=start, stop=stop,
                    title=f"{prefix}boundary internals, steps {start}-{stop - 1}"),
            }
        return {
            "boundary_grid": plot_boundary_grid(
                trace, os.path.join(out_dir, "boundary_grid.png"), start=start, stop=stop,
                title=f"{prefix}frames with boundary bar, steps {start}-{stop - 1}"),
            "boundary_internal": plot_boundary_internal(
                trace, os.path.join(out_dir, "boundary_internal.png"), start=start, stop=stop,
                title=f"{prefix}boundary internals, steps {start}-{stop - 1}"),
            "boundary_fired": plot_boundary_fired(
                trace, os.path.join(out_dir, "boundary_fired.png"), start=start, stop=stop,
                title=f"{prefix}READ frames, steps {start}-{stop - 1}: {fired} fired"),
        }
    except BaseException:
        if created and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
