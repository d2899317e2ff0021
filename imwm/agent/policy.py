"""The acting policy of a Dreamer agent, for TorchRL's ``Collector``.

DreamerV3 acts by filtering the observation stream with the world model (encoder +
``dynamics.obs_step``) and feeding the posterior features to the actor. The recurrent state and
the previous action live inside this module, one row per environment, and are reset where the
environment flags a new episode (``is_init`` from TorchRL's ``InitTracker``).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type

from imwm.errors import check_integer

__all__ = ["DreamerPolicy"]

_GREEDY = {ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN, ExplorationType.MEDIAN}


class DreamerPolicy(TensorDictModuleBase):
    """Recurrent acting policy: ``observation``, ``is_init`` -> one-hot ``action``.

    Args:
        encoder: observation encoder (``[n, *obs_shape] -> [n, E]``), the world model's.
        dynamics: a :class:`~imwm.dynamics.Dynamics` (``initial``, ``obs_step``, ``get_feat``).
        actor: :class:`~imwm.agent.Actor`.
        num_envs: number of environments (rows of the recurrent state).
        action_dtype: dtype of the written action (match the env's one-hot action spec).
        greedy_every: when > 0, every ``greedy_every``-th episode of each env (counted from the
            ``is_init`` flags this policy sees) takes the most likely action even under
            ``ExplorationType.RANDOM``, so the replay also holds the states the greedy policy
            visits (which a sampling policy may rarely reach). 0 (default) never does.
        observation_key, is_init_key, action_key: TensorDict keys.

    Samples the action under ``ExplorationType.RANDOM`` (and when no exploration type is set);
    takes the most likely action under ``DETERMINISTIC``/``MODE``/``MEAN`` (greedy evaluation).
    Runs under ``torch.no_grad()``. The collector's TensorDict may be batched ``[num_envs]`` or,
    for a single unbatched env, ``[]``.

    Example:
        >>> from torchrl.collectors import Collector
        >>> from imwm.configs import compose_config
        >>> from imwm.envs import make_env
        >>> from imwm.training.build_model import build_agent
        >>> env = make_env(name="cartpole", num_envs=1, seed=0)
        >>> agent = build_agent(compose_config(["preset=debug"]), obs_shape=(4,), action_dim=2)
        >>> collector = Collector(env, agent.policy(num_envs=1), frames_per_batch=8, total_frames=8)
        >>> next(iter(collector))["action"].shape
        torch.Size([1, 8, 2])
        >>> collector.shutdown()
    """

    def __init__(
        self,
        encoder: nn.Module,
        dynamics,
        actor: nn.Module,
        num_envs: int,
        *,
        action_dtype: torch.dtype = torch.float32,
        greedy_every: int = 0,
        observation_key: NestedKey = "observation",
        is_init_key: NestedKey = "is_init",
        action_key: NestedKey = "action",
    ) -> None:
        super().__init__()
        check_integer("num_envs", num_envs)
        self.encoder = encoder
        self.dynamics = dynamics
        self.actor = actor
        self.num_envs = int(num_envs)
        self.greedy_every = check_integer("greedy_every", greedy_every, 0)
        self.action_dtype = action_dtype
        self.observation_key = observation_key
        self.is_init_key = is_init_key
        self.action_key = action_key
        self.in_keys = [observation_key, is_init_key]
        self.out_keys = [action_key]
        self.reset()

    def reset(self) -> None:
        """Forget every env's recurrent state and previous action."""
        self.state = self.dynamics.initial(self.num_envs)
        ref = self.state["deter"] if "deter" in self.state.keys() else next(iter(self.state.values(True, True)))
        self.prev_action = torch.zeros(self.num_envs, self.dynamics.action_dim, device=ref.device, dtype=ref.dtype)
        self.episodes = torch.zeros(self.num_envs, 1, dtype=torch.long, device=ref.device)  # started, per env

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        lead = tensordict.batch_size
        n = lead.numel()
        if n != self.num_envs:
            raise ValueError(
                f"DreamerPolicy was built for num_envs={self.num_envs}, got a TensorDict of batch "
                f"{tuple(lead)}; build it with agent.policy(num_envs={n})"
            )
        obs = tensordict.get(self.observation_key, None)
        if obs is None:
            raise KeyError(f"DreamerPolicy needs key {self.observation_key!r}")
        is_init = tensordict.get(self.is_init_key, None)
        if is_init is None:
            raise KeyError(
                f"DreamerPolicy needs key {self.is_init_key!r}: append torchrl.envs.InitTracker() to the env"
            )
        out_device = obs.device
        # an env on the CPU may feed a policy on the GPU (greedy evaluation): move both ways
        obs = obs.reshape(n, *obs.shape[len(lead):]).to(self.prev_action.device)
        is_init = is_init.reshape(n, 1).bool().to(self.prev_action.device)
        embed = self.encoder(obs)
        posterior, _ = self.dynamics.obs_step(self.state, self.prev_action, embed, is_init)
        log_probs = self.actor(self.dynamics.get_feat(posterior))
        if self.greedy_every:  # episodes are counted only where they choose the action
            self.episodes += is_init.long()
        if exploration_type() in _GREEDY:
            action = self.actor.mode(log_probs)
        elif self.greedy_every:
            greedy = self.episodes % self.greedy_every == 0
            action = torch.where(greedy, self.actor.mode(log_probs), self.actor.sample(log_probs))
        else:
            action = self.actor.sample(log_probs)
        self.state = posterior
        self.prev_action = action
        action = action.to(device=out_device, dtype=self.action_dtype)
        tensordict.set(self.action_key, action.reshape(*lead, action.shape[-1]))
        return tensordict
