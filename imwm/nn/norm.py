"""LayerNorm over the channel axis (axis 1) of ``[N, C, ...]`` tensors.

PyTorch's ``nn.LayerNorm`` normalises the trailing axes; convolutional maps ``[N, C, H, W]`` and
1-d sequences ``[N, C, T]`` keep their channels on axis 1. Moving the channel axis last is a view,
and on ``channels_last`` maps it is contiguous, so the norm runs without a copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelLayerNorm"]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over axis 1 of ``[N, C, *spatial]``: one normalisation per position.

    Used after each convolution of the DreamerV3 image encoder and decoder (``[N, C, H, W]``,
    Hafner et al. 2023) and in the dreamer-flavoured VTA boundary detector (``[N, C, T]``).

    Args:
        channels: size of axis 1.
        eps: added to the variance (DreamerV3 uses 1e-3 in its image networks).

    Example:
        >>> norm = ChannelLayerNorm(3)
        >>> y = norm(torch.arange(24.0).view(2, 3, 4))
        >>> y.shape, torch.allclose(y.mean(1), torch.zeros(2, 4), atol=1e-6)
        (torch.Size([2, 3, 4]), True)
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.normalized_shape[0]:
            raise ValueError(f"expected [N, {self.normalized_shape[0]}, ...], got shape {tuple(x.shape)}")
        y = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before this class was shared kept the VTA detector's norm one level
        # down (``<prefix>norm.weight``); read them as they are
        for name in ("weight", "bias"):
            old = f"{prefix}norm.{name}"
            if old in state_dict and f"{prefix}{name}" not in state_dict:
                state_dict[f"{prefix}{name}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
