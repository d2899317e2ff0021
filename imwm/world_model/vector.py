"""Encoder and decoder for vector (proprioceptive) observations, DreamerV3 style.

Hafner et al., 2023 (DreamerV3): vector inputs are squashed with ``symlog`` before the encoder MLP,
and the decoder predicts ``symlog(obs)`` with a squared-error loss in symlog space, so inputs and
targets of any scale train with fixed hyperparameters. Optionally the decoder also learns a std
per dim (Gaussian NLL), read by the LEXA-style intrinsic reward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn

from imwm.nn.distributions import gaussian_nll
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
    """``[..., feat_dim]`` -> TensorDict with the predicted ``symlog(obs)`` (and its std).

    The MLP predicts the mean ``vector`` of ``symlog(obs)``; with ``learned_std=True`` it also
    predicts ``vector_std = softplus(raw) + min_std`` per dim (the image decoder's parameterisation),
    so the LEXA-style intrinsic reward (Mendonca et al., 2021) has an uncertainty to read on
    vector tasks too. Loss per step, with ``y = symlog(obs)``, ``mu = vector``, ``s = vector_std``:

    - fixed unit std (default, DreamerV3): ``sum_d (mu_d - y_d)^2``;
    - ``learned_std``: Gaussian NLL ``sum_d [0.5 ((mu_d - y_d) / s_d)^2 + log s_d + 0.5 log(2 pi)]``.

    Output TensorDict (batch = leading dims): ``vector`` ``[..., obs_dim]`` and, with
    ``learned_std``, ``vector_std`` ``[..., obs_dim]``.

    Args:
        feat_dim: input feature width (``dynamics.feat_dim``).
        obs_dim: observation width ``D``.
        mlp_units, mlp_layers: config ``model.*``.
        learned_std: predict a per-dim std and train it with the Gaussian NLL.
        min_std: floor of that std (> 0).

    Example:
        >>> dec = VectorDecoder(feat_dim=8, obs_dim=4, mlp_units=16, mlp_layers=1, learned_std=True)
        >>> out = dec(torch.randn(2, 3, 8))
        >>> out["vector"].shape, out["vector_std"].shape
        (torch.Size([2, 3, 4]), torch.Size([2, 3, 4]))
        >>> dec.loss(out, torch.randn(2, 3, 4)).shape, dec.mean_std(out).shape
        (torch.Size([2, 3]), torch.Size([2, 3, 1]))
    """

    def __init__(
        self,
        *,
        feat_dim: int,
        obs_dim: int,
        mlp_units: int,
        mlp_layers: int,
        learned_std: bool = False,
        min_std: float = 0.1,
    ):
        super().__init__()
        if obs_dim < 1:
            raise ValueError(f"obs_dim must be >= 1, got {obs_dim}")
        if learned_std and not min_std > 0:
            raise ValueError(f"min_std must be > 0, got {min_std}")
        self.feat_dim = feat_dim
        self.obs_dim = obs_dim
        self.learned_std = bool(learned_std)
        self.min_std = float(min_std)
        self.mlp = MLP(feat_dim, obs_dim * (2 if learned_std else 1), units=mlp_units, layers=mlp_layers)

    def forward(self, feat: torch.Tensor) -> TensorDict:
        if feat.shape[-1] != self.feat_dim:
            raise ValueError(f"feat must end with feat_dim={self.feat_dim}, got {tuple(feat.shape)}")
        out = self.mlp(feat)
        if not self.learned_std:
            return TensorDict({"vector": out}, batch_size=feat.shape[:-1])
        mean, raw_std = out.split(self.obs_dim, dim=-1)
        return TensorDict(
            {"vector": mean, "vector_std": F.softplus(raw_std) + self.min_std},
            batch_size=feat.shape[:-1],
        )

    def loss(self, decoded: TensorDict, observation: torch.Tensor) -> torch.Tensor:
        """Per-step loss ``[...]`` summed over dims: squared error, or Gaussian NLL with learned std."""
        pred = decoded["vector"]
        if observation.shape != pred.shape:
            raise ValueError(
                f"observation shape {tuple(observation.shape)} does not match the decoded vector "
                f"{tuple(pred.shape)}"
            )
        err = pred - symlog(observation.float())
        if not self.learned_std:
            return err.square().sum(-1)
        std = decoded["vector_std"]
        nll = gaussian_nll(err, std)
        return nll.sum(-1)

    def mean_std(self, decoded: TensorDict) -> torch.Tensor:
        """Mean predicted std over the observation's dims, ``[..., 1]`` (LEXA-style curiosity)."""
        std = decoded.get("vector_std", None) if self.learned_std else None
        if std is None:
            raise ValueError(
                "the vector decoder predicts no std (no 'vector_std'): build the agent with "
                "agent.learned_std=true"
            )
        return std.mean(-1, keepdim=True)

    def reconstruction(self, decoded: TensorDict) -> torch.Tensor:
        """Predicted observation in its raw scale (``symexp`` of the prediction)."""
        return symexp(decoded["vector"])
