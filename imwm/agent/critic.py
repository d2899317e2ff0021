"""The DreamerV3 critic network: a two-hot categorical value in symlog space.

Hafner et al. 2023 (DreamerV3): the critic predicts a distribution over 255 bins spaced evenly
in symlog space, so returns of any scale are learned with the same cross-entropy loss; the
output layer is zero-initialised so that the first value predictions are exactly 0.
"""

from __future__ import annotations

from torch import Tensor, nn

from imwm.nn import MLP, SymlogTwoHot

__all__ = ["Critic"]


class Critic(nn.Module):
    """``feat -> value logits [..., num_bins]``; ``mean(logits) -> value [..., 1]``.

    Args:
        feat_dim: width of ``dynamics.get_feat(state)``.
        mlp_units, mlp_layers: hidden width and depth.
        num_bins: two-hot bins (DreamerV3: 255).

    Example:
        >>> import torch
        >>> critic = Critic(8, mlp_units=16, mlp_layers=1)
        >>> logits = critic(torch.randn(5, 8))
        >>> critic.mean(logits).detach().squeeze(-1)  # zero-initialised output layer
        tensor([0., 0., 0., 0., 0.])
    """

    def __init__(self, feat_dim: int, *, mlp_units: int, mlp_layers: int, num_bins: int = 255) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.net = MLP(feat_dim, num_bins, units=mlp_units, layers=mlp_layers, out_scale=0.0)
        self.two_hot = SymlogTwoHot(num_bins)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)

    def mean(self, logits: Tensor) -> Tensor:
        """Predicted value ``[..., 1]`` (symexp of the expected bin)."""
        return self.two_hot.mean(logits)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Two-hot cross entropy against raw targets, ``[...]``."""
        return self.two_hot.loss(logits, target)
