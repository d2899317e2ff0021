"""Any :class:`~imwm.dynamics.Dynamics` as TensorDict-in / TensorDict-out TorchRL modules.

The dynamics classes keep a tensor-level API (``observe(embed, action, is_first)``,
``img_step(state, action)``): the agent's update calls them inside compiled loops, where
TensorDict bookkeeping per step costs time. These two wrappers give the same computations the
``TensorDictModuleBase`` form TorchRL pipelines compose (``TensorDictSequential``, a
model-based env's world model), for RSSM and VTA alike; the state keys come from the
dynamics' own :meth:`initial` state:

- :class:`~imwm.dynamics.RSSMDynamics`: ``deter``, ``stoch``, ``logits``;
- :class:`~imwm.vta.VTADynamics`: its abstract / observation-level beliefs, latents and
  boundary bookkeeping (listed in its docstring).
"""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

__all__ = ["ObserveModule", "ImagineStepModule", "state_keys"]


def state_keys(dynamics: nn.Module) -> list:
    """The leaf keys of ``dynamics.initial(1)``: what one latent state holds.

    Example:
        >>> from imwm.dynamics import RSSMDynamics
        >>> state_keys(RSSMDynamics(deter=8, stoch=2, classes=2, hidden=8, blocks=2, action_dim=1, embed_dim=4))
        ['deter', 'stoch', 'logits']
    """
    return list(dynamics.initial(1).keys(True, True))


def _nest(prefix: str | tuple, key) -> tuple:
    prefix = prefix if isinstance(prefix, tuple) else (prefix,)
    return (*prefix, *(key if isinstance(key, tuple) else (key,)))


class ObserveModule(TensorDictModuleBase):
    """``dynamics.observe`` on a sequence TensorDict ``[B, T]``.

    ``in_keys``: ``embed [B,T,E]``, ``action [B,T,A]`` (the action that led to each step),
    ``is_first [B,T,1]``; ``out_keys``: ``("posterior", k)`` and ``("prior", k)`` for every state
    key ``k`` and ``feat`` (the posterior features).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from imwm.dynamics import RSSMDynamics
        >>> rssm = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=2, embed_dim=8)
        >>> observe = ObserveModule(rssm)
        >>> td = observe(TensorDict({"embed": torch.randn(3, 5, 8), "action": torch.zeros(3, 5, 2),
        ...     "is_first": torch.zeros(3, 5, 1, dtype=torch.bool)}, [3, 5]))
        >>> td["posterior", "deter"].shape, td["feat"].shape
        (torch.Size([3, 5, 16]), torch.Size([3, 5, 24]))
    """

    def __init__(self, dynamics: nn.Module) -> None:
        super().__init__()
        self.dynamics = dynamics
        keys = state_keys(dynamics)
        self.in_keys = ["embed", "action", "is_first"]
        self.out_keys = [_nest("posterior", k) for k in keys] + [_nest("prior", k) for k in keys] + ["feat"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_dims != 2:
            raise ValueError(f"ObserveModule expects a sequence [B, T], got batch size {tuple(tensordict.batch_size)}")
        posterior, prior = self.dynamics.observe(*(tensordict.get(k) for k in self.in_keys))
        return tensordict.update({"posterior": posterior, "prior": prior,
                                  "feat": self.dynamics.get_feat(posterior)})


class ImagineStepModule(TensorDictModuleBase):
    """One prior step ``dynamics.img_step`` on a TensorDict: ``state, action -> next state``.

    ``in_keys``: ``("state", k)`` for every state key and ``action``; ``out_keys``:
    ``("next", "state", k)`` and ``("next", "feat")`` — TorchRL's ``"next"`` convention, so
    ``tensordict["next"]`` is the input of the following step.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from imwm.dynamics import RSSMDynamics
        >>> rssm = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=2, embed_dim=8)
        >>> step = ImagineStepModule(rssm)
        >>> td = step(TensorDict({"state": rssm.initial(4), "action": torch.zeros(4, 2)}, [4]))
        >>> td["next", "state", "deter"].shape, td["next", "feat"].shape
        (torch.Size([4, 16]), torch.Size([4, 24]))
    """

    def __init__(self, dynamics: nn.Module) -> None:
        super().__init__()
        self.dynamics = dynamics
        keys = state_keys(dynamics)
        self.in_keys = [_nest("state", k) for k in keys] + ["action"]
        self.out_keys = [_nest(("next", "state"), k) for k in keys] + [("next", "feat")]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        if not action.is_floating_point():  # TorchRL's OneHotCategorical samples integer one-hots
            action = action.to(next(self.dynamics.parameters()).dtype)
        state = self.dynamics.img_step(tensordict.get("state"), action)
        tensordict.set(("next", "state"), state)
        tensordict.set(("next", "feat"), self.dynamics.get_feat(state))
        return tensordict
