"""Latent imagination for DreamerV3 behaviour learning, as one tensor-level loop.

Hafner et al. 2023 (DreamerV3), "Behavior learning": from every posterior state of a replayed
batch, the actor and the dynamics' prior roll out ``H`` steps in latent space; the reward and
continue heads then score the imagined states.

Why not TorchRL's ``DreamerEnv.rollout``: it routes every step through ``EnvBase.step`` with
TensorDict bookkeeping, ``step_mdp`` and spec checks, which we measured at half of a whole
DreamerV3 update on CPU (RESULTS.md compares whole updates with TorchRL's classes). Here the loop touches only tensors and the dynamics' ``img_step``, the
dynamics run without autograd (the discrete actor learns by REINFORCE, so no gradient has to
flow through imagined states; this also frees the loop from storing a graph), and the heads run
once on all ``[N, H+1]`` features after the loop.

Continue: the imagined ``continue`` is the head's probability ``sigmoid(logit)`` (as
docs/architecture.md fixes and TorchRL's ``DreamerV3ActorLoss`` uses); danijar's reference code
takes the Bernoulli mode (0/1) instead. With a well-trained head the two agree except near
terminal states, where the probability gives a smoother weight.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from imwm.errors import check_integer

__all__ = ["imagine"]


def imagine(
    dynamics,
    actor: nn.Module,
    reward_head: nn.Module,
    continue_head: nn.Module,
    start_state: TensorDictBase,
    horizon: int,
    *,
    start_is_terminal: Tensor | None = None,
) -> TensorDict:
    """Roll out the actor in the dynamics' prior for ``horizon`` steps from ``start_state``.

    Args:
        dynamics: a :class:`~imwm.dynamics.Dynamics` (``img_step``, ``get_feat``, ``uncertainty``).
        actor: :class:`~imwm.agent.Actor` (``feat -> log-probs``, ``sample``).
        reward_head: world-model reward head (``feat -> logits``, ``mean(logits) -> [..., 1]``).
        continue_head: world-model continue head (``feat -> logit [..., 1]``).
        start_state: dynamics states with any batch shape (e.g. the posteriors ``[B, T]``);
            flattened to ``N`` start states and detached.
        horizon: ``H`` >= 1 imagined steps (DreamerV3: 15).
        start_is_terminal: ``[*batch, 1]`` flags of the start states; index 0 of ``continue`` is
            ``1 - start_is_terminal`` (1 when not given).

    Returns:
        TensorDict ``[N, H+1]`` with the keys of docs/architecture.md "Imagined trajectory":
        ``("state", *)``, ``feat``, ``action`` (one-hot, sampled at each state), ``reward``,
        ``continue`` (probabilities), ``uncertainty``, ``total_reward`` (= ``reward``; an
        intrinsic-reward transform overwrites it), plus ``action_log_probs`` ``[N,H+1,A]`` —
        the actor's log-probs on the detached features, with gradient to the actor when grad
        mode is on, so :class:`~imwm.objectives.ActorLoss` needs no second actor pass.

    Example:
        >>> from imwm.dynamics import RSSMDynamics
        >>> from imwm.agent import Actor
        >>> dyn = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=3, embed_dim=8)
        >>> actor = Actor(dyn.feat_dim, 3, mlp_units=16, mlp_layers=1)
        >>> # reward_head / continue_head: see imwm.world_model
    """
    horizon = check_integer("horizon", horizon)
    batch_shape = start_state.batch_size
    n = batch_shape.numel()
    if n == 0:
        raise ValueError(f"start_state has no states (batch {tuple(batch_shape)})")
    state = start_state.detach().reshape(n)
    if start_is_terminal is not None:
        if tuple(start_is_terminal.shape) != (*batch_shape, 1):
            raise ValueError(
                f"start_is_terminal must have shape {(*batch_shape, 1)}, got {tuple(start_is_terminal.shape)}"
            )
        start_continue = 1.0 - start_is_terminal.reshape(n, 1).float()

    states, feats, log_probs, actions = [], [], [], []
    with torch.no_grad():
        feat = dynamics.get_feat(state)
    for t in range(horizon + 1):
        lp = actor(feat)  # grad to the actor only: feat carries no graph
        action = actor.sample(lp)
        states.append(state)
        feats.append(feat)
        log_probs.append(lp)
        actions.append(action)
        if t < horizon:
            with torch.no_grad():
                state = dynamics.img_step(state, action)
                feat = dynamics.get_feat(state)

    # the start posterior may carry keys the prior step does not write: keep the common ones
    keys = list(states[-1].keys(True, True))
    missing = [k for k in keys if k not in states[0].keys(True, True)]
    if missing:
        raise KeyError(f"start_state lacks key(s) {missing} that dynamics.img_step writes")
    states[0] = states[0].select(*keys)
    state_seq = torch.stack(states, 1)
    feat_seq = torch.stack(feats, 1)
    with torch.no_grad():
        reward = reward_head.mean(reward_head(feat_seq))
        cont = torch.sigmoid(continue_head(feat_seq))
        if start_is_terminal is not None:
            cont = torch.cat([start_continue.to(cont.dtype).unsqueeze(1), cont[:, 1:]], 1)
        else:
            cont = torch.cat([torch.ones_like(cont[:, :1]), cont[:, 1:]], 1)
        uncertainty = dynamics.uncertainty(state_seq)
    traj = TensorDict(
        {
            "state": state_seq,
            "feat": feat_seq,
            "action": torch.stack(actions, 1),
            "action_log_probs": torch.stack(log_probs, 1),
            "reward": reward,
            "continue": cont,
            "uncertainty": uncertainty,
            "total_reward": reward.clone(),
        },
        batch_size=[n, horizon + 1],
    )
    return traj
