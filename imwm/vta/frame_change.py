"""The boundary detector's own view of the pixels: features of the frame change ``|x_t - x_{t-1}|``.

The posterior boundary detector of VTA (Kim, Ahn & Bengio, NeurIPS 2019) reads the encoder's
embeddings, which the image model shapes for reconstruction, not for finding changes. Where a
change is small in pixels and does not matter much to the reconstruction (a colour change of a
small moving object), the embeddings may not separate it from motion, and the detector ranks
changes at chance although the raw frame difference ranks them well. This encoder gives the
detector a second input it trains itself (no reconstruction shapes it): a small strided CNN over
the absolute frame difference, pooled over space. Both variants take it
(``boundary_pixel_view``: :class:`~imwm.vta.original.VTAOriginal` and
:class:`~imwm.vta.sequence_model.VTASequenceModel`); the agent's world model does not feed it yet.

On three frozen ``appearance`` models (trained 4,000 updates with the causal, locally trained,
batch-normalised detector reading embedding differences) a fresh detector that also read 16 such
features reached a held-out AUC of 0.64 / 0.50 / 0.57 after 500 steps on the frozen model's loss,
against 0.48 / 0.49 / 0.49 without them. Trained with the model from scratch (``appearance``, the
same detector options, 3 seeds, 4,000 updates) the view lifts q(READ)'s AUC to 0.57 / 0.63 / 0.56
against 0.49 / 0.50 / 0.51 without it (RESULTS.md, "VTA's dreamer variant with the causal
detector…").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from imwm.errors import check_integer

__all__ = ["FrameChangeEncoder"]


class FrameChangeEncoder(nn.Module):
    """``[B, T, C, H, W]`` frames -> ``[B, T, features]``: a CNN over ``|x_t - x_{t-1}|``.

    Two ``Conv2d(k=4, s=2, p=1) -> SiLU`` blocks (``depth`` and ``2 * depth`` channels), a mean
    over space and a ``Linear`` to ``features``. The change at ``t = 0`` is zero (nothing came
    before the first frame). No normalisation: the magnitude of the change is the signal.

    Args:
        channels: image channels ``C``.
        features: output width (the detector reads ``cat(embed, features)``).
        depth: channels of the first block.

    Example:
        >>> enc = FrameChangeEncoder(channels=3, features=4, depth=8)
        >>> x = torch.zeros(2, 5, 3, 16, 16)
        >>> out = enc(x); out.shape
        torch.Size([2, 5, 4])
        >>> torch.allclose(out, out[:, :1].expand_as(out))  # no change anywhere: the same features
        True
        >>> x[:, 3, :, 4:8, 4:8] = 1.0  # a square appears at t = 3 and is gone at t = 4
        >>> changed = (enc(x) - out).abs().sum(-1) > 0
        >>> changed[0].tolist()
        [False, False, False, True, True]
    """

    def __init__(self, *, channels: int, features: int, depth: int = 16):
        super().__init__()
        self.channels = check_integer("channels", channels)
        self.features = check_integer("features", features)
        depth = check_integer("depth", depth)
        self.net = nn.Sequential(
            nn.Conv2d(channels, depth, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(depth, 2 * depth, 4, 2, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * depth, features),
        )

    def forward(self, frames: Tensor) -> Tensor:
        if frames.dim() != 5 or frames.shape[2] != self.channels:
            raise ValueError(f"frames must be [B, T, {self.channels}, H, W], got shape {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        previous = torch.cat([frames[:, :1], frames[:, :-1]], 1)
        change = (frames - previous).abs()
        return self.net(change.flatten(0, 1)).view(B, T, self.features)
