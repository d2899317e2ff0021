"""Encoder and decoder for vector (proprioceptive) observations, DreamerV3 style.

Hafner et al., 2023 (DreamerV3): vector inputs are squashed with ``symlog`` before the encoder MLP,
and the decoder predicts ``symlog(obs)`` with a squared-error loss in symlog space, so inputs and
targets of any scale train with fixed hyperparameters.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from imwm.nn.functional import symexp, symlog
from imwm.nn.mlp import MLP


class VectorEncoder(nn.Module):
    """``[..., obs_dim]`` -> ``MLP(symlog(obs))`` ``[..., mlp_units]``.

    Example:
        >>> VectorEncoder(obs_dim=4, mlp_units=16, mlp_layers=2)(torch.randn(2, 3, 4)).shape
        torch.Size([2, 3, 16])
    """

    def __init__(self, *, obs_dim: int, mlp_units: int, mlp_layers: int):
        super().__init__()
        if obs_dim < 1:
            raise ValueError(f"obs_dim must be >= 1, got {obs_dim}")
        if mlp_layers < 1:
            raise ValueError(f"mlp_layers must be >= 1 for a vector encoder, got {mlp_layers}")
        self.obs_dim = obs_dim
        self.embed_dim = mlp_units
        self.mlp = MLP(obs_dim, None, units=mlp_units, layers=mlp_layers)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        if observation.shape[-1] != self.obs_dim:
            raise ValueError(
                f"observation must end with obs_dim={self.obs_dim}, got {tuple(observation.shape)}"
            )
        return self.mlp(symlog(observation.float()))


class VectorDecoder(nn.Module):
    """``[..., feat_dim]`` -> TensorDict ``{"vector": predicted symlog(obs) [..., obs_dim]}``.

    Loss: ``sum_d (vector_d - symlog(obs_d))^2`` per step.

    Example:
        >>> dec = VectorDecoder(feat_dim=8, obs_dim=4, mlp_units=16, mlp_layers=1)
        >>> dec.loss(dec(torch.randn(2, 3, 8)), torch.randn(2, 3, 4)).shape
        torch.Size([2, 3])
    """

    learned_std = False

    def __init__(self, *, feat_dim: int, obs_dim: int, mlp_units: int, mlp_layers: int):
        super().__init__()
        if obs_dim < 1:
            raise ValueError(f"obs_dim must be >= 1, got {obs_dim}")
        self.feat_dim = feat_dim
        self.obs_dim = obs_dim
        self.mlp = MLP(feat_dim, obs_dim, units=mlp_units, layers=mlp_layers)

    def forward(self, feat: torch.Tensor) -> TensorDict:
        return TensorDict({"vector": self.mlp(feat)}, batch_size=feat.shape[:-1])

    def loss(self, decoded: TensorDict, observation: torch.Tensor) -> torch.Tensor:
        """Per-step squared error in symlog space, summed over dims: ``[...]``."""
        pred = decoded["vector"]
        if observation.shape != pred.shape:
            raise ValueError(
                f"observation shape {tuple(observation.shape)} does not match the decoded vector "
                f"{tuple(pred.shape)}"
            )
        return (pred - symlog(observation.float())).square().sum(-1)

    def reconstruction(self, decoded: TensorDict) -> torch.Tensor:
        """Predicted observation in its raw scale (``symexp`` of the prediction)."""
        return symexp(decoded["vector"])
