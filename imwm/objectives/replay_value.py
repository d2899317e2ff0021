"""DreamerV3's replay value loss (``repval``, 2024 code): the critic also learns on replayed sequences.

danijar/dreamerv3 (commit e3f0224), ``dreamerv3/agent.py`` lines 218-235 and ``repl_loss``
(lines 449-479); weight ``loss_scales.repval: 0.3`` and ``repl_loss: {slowtar: False, lam: 0.95,
slowreg: 1.0}`` in ``dreamerv3/configs.yaml`` lines 86 and 109. The critic, evaluated on the
posterior features of the replayed batch, regresses (two-hot cross entropy) on
:func:`~imwm.objectives.returns.replay_lambda_return`: lambda-returns along the *real* rewards and
episode flags, bootstrapped at every step by the imagination return from that step's posterior
state. As in the imagination critic loss the slow-critic regulariser is added, and steps with
``is_last`` are masked out::

    L = mean_{b, t < T-1} (1 - is_last_t) * [ -log p(sg(R_t) | s_t) - slow_scale * log p(sg(v_slow(s_t)) | s_t) ]

(mean over all ``B * (T-1)`` entries, masked ones included, as the reference averages).

Not reproduced: the reference lets this loss's gradient reach the world model
(``repval_grad: True``, configs.yaml line 116) because it takes one joint step on the sum of all
losses; here the world model steps first, so ``feat`` is detached and only the critic learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from imwm.objectives.critic import value_nll_with_slow_reg
from imwm.objectives.returns import replay_lambda_return

__all__ = ["ReplayValueLoss"]


class ReplayValueLoss(LossModule):
    """Critic loss on replayed sequences ``[B, T]`` with imagination-bootstrapped lambda-returns.

    Args:
        critic: the :class:`~imwm.agent.Critic` (shared with :class:`~imwm.objectives.CriticLoss`).
        slow_critic: the slow critic (``CriticLoss.slow_critic``), for the regulariser.
        gamma: discount per step (reference ``1 - 1/333``).
        lmbda: lambda (reference 0.95).
        slow_critic_scale: weight of the slow-critic regulariser (reference 1.0, ``repl_loss.slowreg``).
        scale: weight of the whole term (reference ``loss_scales.repval`` 0.3; the agent passes
            ``agent.repval_scale``), applied inside so that ``loss_repval`` sums with the other
            ``loss_*`` terms.

    Keys (:meth:`set_keys` renames them), all ``[B, T, ...]``: ``feat`` (posterior features,
    detached here), ``reward``, ``is_terminal``, ``is_last`` (replayed) and ``bootstrap`` (the
    imagination return ``R_0`` from each step's posterior state). :meth:`forward` returns
    ``loss_repval`` (already times ``scale``) and the detached metric ``repval_return_mean``.

    Example:
        >>> from imwm.agent import Critic
        >>> import copy
        >>> critic = Critic(8, mlp_units=16, mlp_layers=1)
        >>> loss = ReplayValueLoss(critic, copy.deepcopy(critic), gamma=0.997, lmbda=0.95)
        >>> B, T = 2, 4
        >>> td = TensorDict({"feat": torch.randn(B, T, 8), "reward": torch.randn(B, T, 1),
        ...     "is_terminal": torch.zeros(B, T, 1, dtype=torch.bool),
        ...     "is_last": torch.zeros(B, T, 1, dtype=torch.bool),
        ...     "bootstrap": torch.randn(B, T, 1)}, [B, T])
        >>> loss(td)["loss_repval"].shape
        torch.Size([])
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable replay keys (see the class docstring)."""

        feat: NestedKey = "feat"
        reward: NestedKey = "reward"
        is_terminal: NestedKey = "is_terminal"
        is_last: NestedKey = "is_last"
        bootstrap: NestedKey = "bootstrap"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        critic: nn.Module,
        slow_critic: nn.Module,
        *,
        gamma: float = 0.997,
        lmbda: float = 0.95,
        slow_critic_scale: float = 1.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if not 0.0 <= lmbda <= 1.0:
            raise ValueError(f"lmbda must be in [0, 1], got {lmbda}")
        if slow_critic_scale < 0:
            raise ValueError(f"slow_critic_scale must be >= 0, got {slow_critic_scale}")
        if not scale >= 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.scale = float(scale)
        self.critic = critic
        self.slow_critic = slow_critic
        self.gamma = gamma
        self.lmbda = lmbda
        self.slow_critic_scale = slow_critic_scale

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self):
        k = self.tensor_keys
        return [k.feat, k.reward, k.is_terminal, k.is_last, k.bootstrap]

    @property
    def out_keys(self):
        return ["loss_repval", "repval_return_mean"]

    def _get(self, td: TensorDictBase, key: NestedKey) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            raise KeyError(
                f"ReplayValueLoss needs key {key!r} in the replay batch (present: "
                f"{sorted(map(str, td.keys(True, True)))})"
            )
        return value

    def forward(self, td: TensorDictBase) -> TensorDict:
        keys = self.tensor_keys
        if td.batch_dims != 2 or td.batch_size[1] < 2:
            raise ValueError(f"ReplayValueLoss expects a replay batch [B, T >= 2], got {tuple(td.batch_size)}")
        feat = self._get(td, keys.feat)[:, :-1].detach().contiguous()  # one GEMM per layer, not a batched one
        is_last = self._get(td, keys.is_last)
        with torch.no_grad():
            returns = replay_lambda_return(
                self._get(td, keys.reward).detach().float(),
                self._get(td, keys.bootstrap).detach().float(),
                self._get(td, keys.is_terminal),
                is_last,
                gamma=self.gamma,
                lmbda=self.lmbda,
            )
        weight = 1.0 - is_last[:, :-1].float()
        logits = self.critic(feat)
        per_step, _ = value_nll_with_slow_reg(self.critic, self.slow_critic, logits, feat, returns,
                                              self.slow_critic_scale)
        return TensorDict(
            {"loss_repval": self.scale * (weight * per_step).mean(), "repval_return_mean": returns.mean()},
            batch_size=[],
        )
