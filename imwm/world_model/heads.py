"""Reward and continue heads of the DreamerV3 world model.

Hafner et al., 2023 (DreamerV3): the reward head is an MLP whose output is a 255-bin two-hot
distribution in symlog space, its last layer zero-initialised so early reward predictions are
exactly 0 (avoids large spurious returns early in training); the continue head is an MLP with a
Bernoulli logit, trained on ``1 - is_terminal``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imwm.nn.functional import SymlogTwoHot
from imwm.nn.mlp import MLP


class RewardHead(nn.Module):
    """``feat [..., F]`` -> two-hot logits ``[..., num_bins]``.

    Example:
        >>> head = RewardHead(feat_dim=8, mlp_units=16, mlp_layers=1)
        >>> logits = head(torch.randn(2, 3, 8))
        >>> head.mean(logits).shape, float(head.mean(logits).detach().abs().max())
        (torch.Size([2, 3, 1]), 0.0)
    """

    def __init__(self, *, feat_dim: int, mlp_units: int, mlp_layers: int, num_bins: int = 255):
        super().__init__()
        self.feat_dim = feat_dim
        self.mlp = MLP(feat_dim, num_bins, units=mlp_units, layers=mlp_layers, out_scale=0.0)
        self.two_hot = SymlogTwoHot(num_bins)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.mlp(feat).float()  # float32 logits even under bfloat16 autocast

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """Predicted reward ``[..., 1]``."""
        return self.two_hot.mean(logits)

    def loss(self, logits: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """Two-hot cross entropy on ``symlog(reward)``; ``reward [..., 1]`` -> ``[...]``."""
        return self.two_hot.loss(logits, reward)


class ContinueHead(nn.Module):
    """``feat [..., F]`` -> continue logit ``[..., 1]``.

    Example:
        >>> head = ContinueHead(feat_dim=8, mlp_units=16, mlp_layers=1)
        >>> head.loss(head(torch.randn(4, 8)), torch.ones(4, 1)).shape
        torch.Size([4])
    """

    def __init__(self, *, feat_dim: int, mlp_units: int, mlp_layers: int):
        super().__init__()
        self.feat_dim = feat_dim
        self.mlp = MLP(feat_dim, 1, units=mlp_units, layers=mlp_layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.mlp(feat).float()  # float32 logits even under bfloat16 autocast

    @staticmethod
    def prob(logit: torch.Tensor) -> torch.Tensor:
        """Continue probability ``[..., 1]``."""
        return torch.sigmoid(logit)

    def loss(self, logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Bernoulli NLL against ``target`` in ``[0, 1]`` (``1 - is_terminal``, or that times the
        discount, see :class:`~imwm.objectives.WorldModelLoss`) ``[..., 1]``; returns ``[...]``."""
        if target.shape != logit.shape:
            raise ValueError(
                f"continue target shape {tuple(target.shape)} must match logit {tuple(logit.shape)}"
            )
        return F.binary_cross_entropy_with_logits(
            logit, target.to(logit.dtype), reduction="none"
        ).squeeze(-1)
