"""Run a restored model over data it was not trained on and record what its boundary does.

A *trace* is a plain ``dict`` of per-step numpy arrays for one episode or one sequence, the
input of ``imwm.analysis.figures`` and of the evaluation script:

| key | shape | meaning |
|---|---|---|
| ``frames`` | ``[T, 3, H, W]`` uint8 | the observations |
| ``boundary`` | ``[T]`` bool | posterior READ (1 = a new segment starts at t) |
| ``read_prob`` | ``[T]`` | posterior P(READ) (before forcing, from the boundary detector) |
| ``seg_len``, ``seg_num`` | ``[T]`` | segment counters after step t |
| ``kl_abs`` | ``[T]`` | abstract KL(post || prior) at t, *not* weighted by READ |
| ``kl_obs`` | ``[T]`` | observation KL(post || prior) at t |
| ``frame_delta`` | ``[T]`` | ``mean |f_t - f_{t-1}|`` (NaN at t = 0) |
| ``reward``, ``raw_reward``, ``lives``, ``is_last``, ``action`` | ``[T]`` | env signals (Atari only) |
| ``true_boundary`` | ``[T]`` bool | known segment starts (Moving Shapes only) |

Step 0 of a sequence or episode is a segment start by construction (the state is reset), so
evaluations leave it out; figures show it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from imwm.analysis.events import frame_delta as compute_frame_delta

__all__ = ["rollout_vta_sequences", "heldout_moving_shapes", "trace_slice"]


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


@torch.no_grad()
def rollout_vta_sequences(model: torch.nn.Module, observation: torch.Tensor, *,
                         true_boundary: torch.Tensor | None = None, batch_size: int = 16) -> list[dict]:
    """Traces of a ``train_vta`` model on sequences ``observation [N, T, 3, H, W]`` (uint8).

    Works for any module whose ``forward(obs)`` returns the ``VTAOriginal`` keys ``boundary``,
    ``read_prob``, ``seg_len``, ``seg_num`` ``[N, T, 1]`` and ``kl_obs``, ``kl_abs_raw`` (or,
    failing that, ``kl_abs``) ``[N, T]``.

    The model runs in ``eval()`` mode: boundaries are the posterior's mode (argmax), not a
    Gumbel sample, so the result is deterministic in the boundary (the latent states are still
    sampled, which affects only the KL curves).
    """
    if observation.dim() != 5:
        raise ValueError(f"observation must be [N, T, C, H, W], got shape {tuple(observation.shape)}")
    if true_boundary is not None and tuple(true_boundary.shape[:2]) != tuple(observation.shape[:2]):
        raise ValueError(f"true_boundary must be [N, T(, 1)] like observation's first two dims "
                         f"{tuple(observation.shape[:2])}, got {tuple(true_boundary.shape)}")
    was_training = model.training
    model.eval()
    traces = []
    try:
        for lo in range(0, observation.shape[0], batch_size):
            obs = observation[lo:lo + batch_size]
            out = model(obs)
            kl_abs_key = "kl_abs_raw" if "kl_abs_raw" in out.keys() else "kl_abs"
            for i in range(obs.shape[0]):
                frames = _np(obs[i])
                trace = {
                    "frames": frames,
                    "boundary": _np(out["boundary"][i, :, 0]) > 0.5,
                    "read_prob": _np(out["read_prob"][i, :, 0]).astype(np.float64),
                    "seg_len": _np(out["seg_len"][i, :, 0]).astype(np.float64),
                    "seg_num": _np(out["seg_num"][i, :, 0]).astype(np.float64),
                    "kl_abs": _np(out[kl_abs_key][i]).reshape(-1).astype(np.float64),
                    "kl_obs": _np(out["kl_obs"][i]).reshape(-1).astype(np.float64),
                    "frame_delta": compute_frame_delta(frames),
                }
                if "prior_read_prob" in out.keys():
                    trace["prior_read_prob"] = _np(out["prior_read_prob"][i, :, 0]).astype(np.float64)
                if true_boundary is not None:
                    tb = true_boundary[lo + i]
                    trace["true_boundary"] = _np(tb.reshape(tb.shape[0])).astype(bool)
                traces.append(trace)
    finally:
        model.train(was_training)
    return traces


def heldout_moving_shapes(data_cfg: Mapping[str, Any], num_sequences: int, *, seed: int | None = None,
                          seq_len: int | None = None):
    """Held-out Moving Shapes sequences generated with the run's own dataset options.

    Args:
        data_cfg: the run's dataset section (``image_size``, ``min_seg_len``, ``max_seg_len``,
            ``seed``, ``seq_len``; other keys ignored).
        num_sequences: how many sequences.
        seed, seq_len: replace the run's values when given.
    """
    from imwm.envs.moving_shapes import generate_moving_shapes

    kwargs = {k: data_cfg[k] for k in ("image_size", "min_seg_len", "max_seg_len") if k in data_cfg}
    length = seq_len if seq_len is not None else data_cfg.get("seq_len")
    if length is None:
        raise ValueError("seq_len is neither in the run's dataset config nor given")
    return generate_moving_shapes(num_sequences, int(length), seed=int(seed if seed is not None
                                                                       else data_cfg.get("seed", 0)),
                                  split="heldout", **kwargs)


def trace_slice(trace: Mapping[str, Any], start: int, stop: int | None = None) -> dict:
    """The steps ``[start, stop)`` of every per-step array of a trace (other entries kept)."""
    length = len(trace["boundary"])
    return {k: (v[start:stop] if isinstance(v, np.ndarray) and v.shape[:1] == (length,) else v)
            for k, v in trace.items()}
