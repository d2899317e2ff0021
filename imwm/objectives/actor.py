"""DreamerV3 actor loss: REINFORCE with percentile-normalised advantages and an entropy bonus.

Hafner et al. 2023 (DreamerV3), "Actor learning":

    L(theta) = - sum_t w_t * [ sg((R_t - v(s_t)) / max(1, S)) * log pi(a_t | sg(s_t))
                               + eta * H(pi(. | sg(s_t))) ]

with ``R_t`` the lambda-return, ``S`` the EMA of the 5th-95th return-percentile range
(:class:`~imwm.objectives.returns.ReturnNormalizer`), ``eta = 3e-4`` and ``w_t`` the cumulative
imagined discount (:func:`~imwm.objectives.returns.imagined_weight`).

Differences from TorchRL's ``DreamerV3ActorLoss`` (0.14.1), and why this is its own class:
it rolls out imagination itself through ``DreamerEnv.rollout`` (per-step TensorDict traffic, which
we measured at half the update time on CPU), so it cannot take a trajectory that was already
imagined (and augmented by an intrinsic-reward transform); here imagination is
:func:`imwm.agent.imagine` and this loss only reads the trajectory. Its maths otherwise agrees
(REINFORCE on detached states and actions, detached cumulative-discount weights, span divisor
``max(1, hi - lo)``); we reuse its percentile normaliser (``PercentileValueNorm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from torch import nn

from imwm.nn import categorical_entropy
from imwm.objectives.returns import ReturnNormalizer

__all__ = ["ActorLoss"]


class ActorLoss(LossModule):
    """REINFORCE actor loss of DreamerV3 on an imagined trajectory ``[N, H+1]``.

    Args:
        actor: the :class:`~imwm.agent.Actor` network (``feat -> log-probs [..., A]``).
        entropy_coef: ``eta`` (DreamerV3: 3e-4).
        retnorm_decay, retnorm_low, retnorm_high, retnorm_min_scale: return normaliser
            (DreamerV3: 0.99, 5, 95, 1).

    Input keys (:meth:`set_keys` renames them): ``feat`` ``[N,H+1,F]``, ``action`` ``[N,H+1,A]``
    one-hot, ``return`` ``[N,H+1,1]`` (lambda-returns; the last entry is unused),
    ``value`` ``[N,H+1,1]`` (critic baseline), ``weight`` ``[N,H+1,1]``; optionally
    ``action_log_probs`` ``[N,H+1,A]`` — the actor's output recorded during imagination on
    detached features, which saves a second actor pass; without it the actor is re-run on
    ``feat.detach()``. The critic's :meth:`~imwm.objectives.CriticLoss.targets` writes
    ``return``, ``value`` and ``weight``.

    Output TensorDict: ``loss_actor`` (scalar, with gradient only to the actor) and detached
    metrics ``actor_entropy``, ``return_scale``, ``return_low``, ``return_high``,
    ``advantage_mean``, ``advantage_abs``.

    Example:
        >>> from imwm.agent import Actor
        >>> actor = Actor(8, 3, mlp_units=16, mlp_layers=1)
        >>> loss = ActorLoss(actor)
        >>> N, H = 4, 5
        >>> traj = TensorDict({
        ...     "feat": torch.randn(N, H + 1, 8),
        ...     "action": torch.eye(3)[torch.randint(3, (N, H + 1))],
        ...     "return": torch.randn(N, H + 1, 1), "value": torch.zeros(N, H + 1, 1),
        ...     "weight": torch.ones(N, H + 1, 1)}, [N, H + 1])
        >>> loss(traj)["loss_actor"].shape
        torch.Size([])
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable trajectory keys (see the class docstring)."""

        feat: NestedKey = "feat"
        action: NestedKey = "action"
        action_log_probs: NestedKey = "action_log_probs"
        returns: NestedKey = "return"
        value: NestedKey = "value"
        weight: NestedKey = "weight"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        actor: nn.Module,
        *,
        entropy_coef: float = 3e-4,
        retnorm_decay: float = 0.99,
        retnorm_low: float = 5.0,
        retnorm_high: float = 95.0,
        retnorm_min_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {entropy_coef}")
        self.actor = actor
        self.entropy_coef = entropy_coef
        self.retnorm = ReturnNormalizer(
            decay=retnorm_decay, perc_low=retnorm_low, perc_high=retnorm_high, min_scale=retnorm_min_scale
        )

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self):
        k = self.tensor_keys
        return [k.feat, k.action, k.returns, k.value, k.weight]

    @property
    def out_keys(self):
        return ["loss_actor", "actor_entropy", "return_scale", "return_low", "return_high",
                "advantage_mean", "advantage_abs"]

    def _get(self, td: TensorDictBase, key: NestedKey) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            raise KeyError(
                f"ActorLoss needs key {key!r} in the imagined trajectory (present: "
                f"{sorted(map(str, td.keys(True, True)))}); CriticLoss.targets(traj) writes "
                f"'return', 'value' and 'weight'"
            )
        return value

    def forward(self, traj: TensorDictBase) -> TensorDict:
        keys = self.tensor_keys
        if traj.batch_dims != 2:
            raise ValueError(f"ActorLoss expects a trajectory of batch [N, H+1], got {tuple(traj.batch_size)}")
        returns = self._get(traj, keys.returns)[:, :-1]
        value = self._get(traj, keys.value)[:, :-1]
        weight = self._get(traj, keys.weight)[:, :-1].detach()
        action = self._get(traj, keys.action)[:, :-1].detach()
        log_probs = traj.get(keys.action_log_probs, None)
        if log_probs is None:
            log_probs = self.actor(self._get(traj, keys.feat)[:, :-1].detach())
        else:
            log_probs = log_probs[:, :-1]

        if self.training:
            self.retnorm.update(returns.detach())
        scale = self.retnorm.scale()
        advantage = ((returns - value) / scale).detach()
        if action.shape != log_probs.shape:
            raise ValueError(
                f"action must be one-hot {tuple(log_probs.shape)} like the policy, got {tuple(action.shape)}"
            )
        log_pi = (log_probs * action).sum(-1, keepdim=True)
        entropy = categorical_entropy(log_probs).unsqueeze(-1)
        per_step = -(advantage * log_pi) - self.entropy_coef * entropy
        loss = (weight * per_step).mean()
        return TensorDict(
            {
                "loss_actor": loss,
                "actor_entropy": entropy.detach().mean(),
                "return_scale": scale.detach().clone(),
                "return_low": self.retnorm.low.detach().reshape(()).clone(),
                "return_high": self.retnorm.high.detach().reshape(()).clone(),
                "advantage_mean": advantage.mean(),
                "advantage_abs": advantage.abs().mean(),
            },
            batch_size=[],
        )
