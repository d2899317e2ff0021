"""The ``Dynamics`` protocol: what a latent dynamics model must offer the world model and agent.

Implemented by :class:`imwm.dynamics.RSSMDynamics` (DreamerV3 RSSM) and ``imwm.vta.VTADynamics``
(VTA, hierarchical). Anything that satisfies it plugs into :class:`imwm.world_model.WorldModel`,
:class:`imwm.objectives.WorldModelLoss` and the agent's imagination. See docs/architecture.md.

States are TensorDicts whose batch size is the leading dims (``[B]`` for one step, ``[B, T]``
for a sequence). Conventions: batch first; flags such as ``is_first`` are ``[..., 1]`` (bool or
float); actions are float ``[..., A]`` (one-hot for discrete actions).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from tensordict import TensorDict


@runtime_checkable
class Dynamics(Protocol):
    """Latent dynamics model interface (a structural ``typing.Protocol``).

    Attributes:
        feat_dim: width of :meth:`get_feat`'s output.
        action_dim: width of the actions it consumes.

    Example:
        >>> from imwm.dynamics import RSSMDynamics
        >>> rssm = RSSMDynamics(deter=8, stoch=2, classes=2, hidden=4, blocks=4,
        ...                     action_dim=1, embed_dim=4)
        >>> isinstance(rssm, Dynamics), isinstance(torch.nn.Linear(2, 2), Dynamics)
        (True, False)
        >>> rssm.get_feat(rssm.initial(3)).shape   # feat_dim = stoch * classes + deter
        torch.Size([3, 12])
    """

    feat_dim: int
    action_dim: int

    def initial(self, batch_size: int) -> TensorDict:
        """The reset state, batch ``[batch_size]`` (zeros for the RSSM)."""
        ...

    def observe(
        self,
        embed: torch.Tensor,
        action: torch.Tensor,
        is_first: torch.Tensor,
        state: TensorDict | None = None,
    ) -> tuple[TensorDict, TensorDict]:
        """Filter a sequence: ``embed [B,T,E]``, ``action [B,T,A]`` (the action that led to
        step t), ``is_first [B,T,1]``; ``state`` is the carried state before step 0 (None:
        :meth:`initial`). Where ``is_first`` the carried state is reset to :meth:`initial` and
        that step's action zeroed. Returns ``(posterior, prior)``, batch ``[B, T]``."""
        ...

    def obs_step(
        self,
        state: TensorDict,
        action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
    ) -> tuple[TensorDict, TensorDict]:
        """One online filtering step (acting): ``[B]`` state, ``[B,A]``, ``[B,E]``, ``[B,1]``."""
        ...

    def img_step(self, state: TensorDict, action: torch.Tensor) -> TensorDict:
        """One prior step (imagination): next state from ``state [B]`` and ``action [B,A]``."""
        ...

    def get_feat(self, state: TensorDict) -> torch.Tensor:
        """Features for heads, actor and critic: ``[..., feat_dim]``."""
        ...

    def kl_loss(
        self,
        posterior: TensorDict,
        prior: TensorDict,
        *,
        free_bits: float,
        dyn_scale: float,
        rep_scale: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-step KL loss ``[B, T]`` and metrics; metrics hold at least ``"kl"`` ``[B, T]``,
        the raw ``KL(posterior || prior)`` (neither clipped nor scaled)."""
        ...

    def entropy(self, state: TensorDict) -> torch.Tensor:
        """Entropy of the state's own stochastic distribution, ``[..., 1]``."""
        ...

    def uncertainty(self, state: TensorDict) -> torch.Tensor:
        """Spread of the state's distribution, ``[..., 1]`` (intrinsic rewards read it)."""
        ...


def check_dynamics(obj: object) -> None:
    """Raise ``TypeError`` naming the missing members if ``obj`` does not meet :class:`Dynamics`.

    Example:
        >>> from imwm.dynamics import RSSMDynamics
        >>> check_dynamics(RSSMDynamics(deter=8, stoch=2, classes=2, hidden=4, blocks=4,
        ...                             action_dim=1, embed_dim=4))   # passes: returns None
        >>> check_dynamics(torch.nn.GRUCell(4, 8))
        Traceback (most recent call last):
        ...
        TypeError: GRUCell does not implement the Dynamics protocol; missing: ['feat_dim', ...]
    """
    members = (
        "feat_dim",
        "action_dim",
        "initial",
        "observe",
        "obs_step",
        "img_step",
        "get_feat",
        "kl_loss",
        "entropy",
        "uncertainty",
    )
    missing = [name for name in members if not hasattr(obj, name)]
    if missing:
        raise TypeError(
            f"{type(obj).__name__} does not implement the Dynamics protocol; missing: {missing}"
        )
