"""What one READ is worth to the model: the exact local effect of a boundary on VTA's objective.

A boundary detector trained by gradient descent can only find the true segment starts if the
objective rewards a READ there *given the other boundaries it currently places*. This probe
measures that reward directly: for every step ``t`` it runs the sequence twice, with READ and with
COPY at ``t`` and every other boundary held, and returns

    effect[b, t] = cost(READ at t) - cost(COPY at t),   cost = sum_t obs_cost + READ * KL_abs + KL_obs

(negative: the READ lowers the cost). Both runs use the same random numbers, so the difference is
the boundary's, not the noise's. This is the quantity the local-expectation gradient of Titsias &
Lazaro-Gredilla (NeurIPS 2015) follows; a straight-through gradient only approximates it.
Held at the true boundaries it shows whether the objective prefers the truth near the truth; held
at the model's own boundaries it shows whether it points towards the truth from where the
detector is.

Works with models whose ``forward(obs, boundary=flags)`` accepts forced READ flags
(:class:`imwm.vta.VTAOriginal`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["local_read_effect"]


def _sequence_cost(model: torch.nn.Module, obs: Tensor, flags: Tensor, seed: int) -> Tensor:
    with torch.random.fork_rng(devices=[obs.device] if obs.device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model(obs, boundary=flags)
    return (out["obs_cost"] + out["kl_abs"] + out["kl_obs"]).sum(1)


@torch.no_grad()
def local_read_effect(model: torch.nn.Module, obs: Tensor, boundary: Tensor, *, seed: int = 0) -> np.ndarray:
    """``cost(READ at t) - cost(COPY at t)`` per sequence and step, the other boundaries held.

    Args:
        model: a VTA model in ``eval()`` mode whose forward takes ``boundary=`` READ flags.
        obs: ``[B, T, C, H, W]`` frames.
        boundary: ``[B, T, 1]`` READ flags to hold (step 0 is always READ).
        seed: seeds the random numbers both runs of a step share.

    Returns:
        ``[B, T - 1]`` float64 effects for steps ``1 .. T-1``, in nats.

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8).eval()
        >>> obs = torch.randint(0, 255, (2, 5, 3, 16, 16), dtype=torch.uint8)
        >>> local_read_effect(m, obs, torch.zeros(2, 5, 1)).shape
        (2, 4)
    """
    if model.training:
        raise ValueError("local_read_effect needs the model in eval() mode (batch norm would mix the runs)")
    B, T = obs.shape[:2]
    if tuple(boundary.shape) != (B, T, 1):
        raise ValueError(f"boundary must be [B, T, 1] READ flags for obs [B, T, ...], got shape {tuple(boundary.shape)}")
    held = (boundary > 0.5).float()
    held[:, 0] = 1.0
    effect = np.zeros((B, T - 1))
    for t in range(1, T):
        read, copy = held.clone(), held.clone()
        read[:, t], copy[:, t] = 1.0, 0.0
        effect[:, t - 1] = (_sequence_cost(model, obs, read, seed) - _sequence_cost(model, obs, copy, seed)).double().cpu().numpy()
    return effect
