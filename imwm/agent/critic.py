"""The DreamerV3 critic network: a two-hot categorical value in symlog space.

Hafner et al. 2023 (DreamerV3): the critic predicts a distribution over 255 bins spaced evenly
in symlog space, so returns of any scale are learned with the same cross-entropy loss; the
output layer is zero-initialised so that the first value predictions are exactly 0.
"""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from imwm.nn import MLP, SymlogTwoHot

__all__ = ["Critic"]


class Critic(TensorDictModuleBase):
    """``feat -> value logits [..., num_bins]``; ``mean(logits) -> value [..., 1]``.

    A ``TensorDictModuleBase``: on a TensorDict it reads ``in_keys = ["feat"]`` and writes
    ``out_keys = ["state_value_logits", "state_value"]`` (TorchRL's value key holds the
    predicted value ``[..., 1]``); on a tensor it returns the logits (the agent's hot path), so
    ``torchrl.modules.ValueOperator(critic, in_keys=["feat"], out_keys=["state_value_logits"])``
    wraps it too.

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
        >>> from tensordict import TensorDict
        >>> critic(TensorDict({"feat": torch.randn(5, 8)}, [5]))["state_value"].shape
        torch.Size([5, 1])
    """

    def __init__(self, feat_dim: int, *, mlp_units: int, mlp_layers: int, num_bins: int = 255) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.net = MLP(feat_dim, num_bins, units=mlp_units, layers=mlp_layers, out_scale=0.0)
        self.two_hot = SymlogTwoHot(num_bins)
        self.in_keys = ["feat"]
        self.out_keys = ["state_value_logits", "state_value"]

    def forward(self, feat: Tensor | TensorDictBase) -> Tensor | TensorDictBase:
        if isinstance(feat, TensorDictBase):
            logits = self.forward(feat.get(self.in_keys[0]))
            return feat.update({self.out_keys[0]: logits, self.out_keys[1]: self.mean(logits)})
        if feat.shape[-1] != self.feat_dim:
            raise ValueError(f"Critic: feat must end with feat_dim={self.feat_dim}, got {tuple(feat.shape)}")
        return self.net(feat).float()  # float32 logits even under bfloat16 autocast

    def mean(self, logits: Tensor) -> Tensor:
        """Predicted value ``[..., 1]`` (symexp of the expected bin)."""
        return self.two_hot.mean(logits)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Two-hot cross entropy against raw targets, ``[...]``."""
        return self.two_hot.loss(logits, target)
