"""The DreamerV3 actor network for discrete actions.

Hafner et al. 2023 (DreamerV3): an MLP on the model state features gives the logits of a
categorical over actions, mixed with 1% uniform ("unimix") so that every action keeps a
minimum probability and the log-probabilities of the REINFORCE estimator stay bounded.
The 2024 reference code (danijar/dreamerv3 ``configs.yaml`` line 100, ``policy: {outscale:
0.01}``) initialises the output layer at 1% of the fan-in scale, so the first policy is close to
uniform; ``out_scale`` selects that (1.0 keeps the 2023 default init).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from imwm.nn import MLP, categorical_entropy, unimix_logits

__all__ = ["Actor"]


class Actor(TensorDictModuleBase):
    """``feat -> log pi(. | s)``: MLP -> logits -> unimix categorical over ``action_dim`` actions.

    A ``TensorDictModuleBase``: on a TensorDict it reads ``in_keys = ["feat"]`` and writes
    ``out_keys = ["logits"]`` (the normalised log-probabilities, valid logits for TorchRL's
    ``OneHotCategorical``), so it goes into a ``TensorDictSequential`` or, as is, into
    ``ProbabilisticActor(actor, in_keys=["logits"], distribution_class=OneHotCategorical)``;
    on a tensor it returns the log-probabilities (the agent's hot path).

    Args:
        feat_dim: width of ``dynamics.get_feat(state)``.
        action_dim: number of discrete actions.
        mlp_units, mlp_layers: hidden width and depth (config ``model.mlp_units/mlp_layers``).
        unimix: uniform fraction mixed into the policy (DreamerV3: 0.01).
        out_scale: init scale of the output layer, multiplying the fan-in truncated-normal std
            (config ``agent.actor_out_scale``; 2023 code 1.0, 2024 code 0.01).

    ``forward`` returns normalised log-probabilities ``[..., A]`` of the *mixed* distribution;
    ``sample`` / ``mode`` turn them into one-hot float actions.

    Example:
        >>> actor = Actor(8, 3, mlp_units=16, mlp_layers=1)
        >>> log_probs = actor(torch.randn(5, 8))
        >>> actor.sample(log_probs).sum(-1)
        tensor([1., 1., 1., 1., 1.])
        >>> from tensordict import TensorDict
        >>> from torchrl.modules import OneHotCategorical, ProbabilisticActor
        >>> policy = ProbabilisticActor(actor, in_keys=["logits"], distribution_class=OneHotCategorical)
        >>> policy(TensorDict({"feat": torch.randn(5, 8)}, [5]))["action"].sum(-1)
        tensor([1, 1, 1, 1, 1])
    """

    def __init__(
        self,
        feat_dim: int,
        action_dim: int,
        *,
        mlp_units: int,
        mlp_layers: int,
        unimix: float = 0.01,
        out_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        if not 0.0 <= unimix < 1.0:
            raise ValueError(f"actor unimix must be in [0, 1), got {unimix}")
        if not out_scale >= 0:
            raise ValueError(f"actor out_scale must be >= 0, got {out_scale}")
        self.feat_dim = feat_dim
        self.action_dim = action_dim
        self.unimix = unimix
        self.net = MLP(feat_dim, action_dim, units=mlp_units, layers=mlp_layers, out_scale=out_scale)
        self.in_keys = ["feat"]
        self.out_keys = ["logits"]

    def forward(self, feat: Tensor | TensorDictBase) -> Tensor | TensorDictBase:
        if isinstance(feat, TensorDictBase):
            return feat.set(self.out_keys[0], self.forward(feat.get(self.in_keys[0])))
        if feat.shape[-1] != self.feat_dim:
            raise ValueError(f"Actor: feat must end with feat_dim={self.feat_dim}, got {tuple(feat.shape)}")
        return unimix_logits(self.net(feat), self.unimix)

    @staticmethod
    def sample(log_probs: Tensor) -> Tensor:
        """One-hot sample (no gradient: the actor learns by REINFORCE, not through the sample)."""
        probs = log_probs.detach().exp().reshape(-1, log_probs.shape[-1])
        index = torch.multinomial(probs, 1).reshape(log_probs.shape[:-1])
        return F.one_hot(index, log_probs.shape[-1]).to(log_probs.dtype)

    @staticmethod
    def mode(log_probs: Tensor) -> Tensor:
        """One-hot greedy action."""
        return F.one_hot(log_probs.detach().argmax(-1), log_probs.shape[-1]).to(log_probs.dtype)

    @staticmethod
    def log_prob(log_probs: Tensor, action: Tensor) -> Tensor:
        """``log pi(a | s)`` of one-hot actions, shape ``[..., 1]``."""
        if action.shape != log_probs.shape:
            raise ValueError(
                f"action must be one-hot of shape {tuple(log_probs.shape)}, got {tuple(action.shape)}"
            )
        return (log_probs * action).sum(-1, keepdim=True)

    @staticmethod
    def entropy(log_probs: Tensor) -> Tensor:
        """Entropy of the mixed categorical, shape ``[..., 1]``."""
        return categorical_entropy(log_probs).unsqueeze(-1)
