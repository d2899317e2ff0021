"""Plan2Explore: ensemble disagreement about the next latent as the intrinsic reward."""

from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from imwm.intrinsic.base import (
    IntrinsicRewardTransform,
    check_finite,
    check_finite_positive,
    masked_mean,
)
from imwm.intrinsic.ensemble import EnsembleMLP


class DisagreementIntrinsicReward(IntrinsicRewardTransform):
    """Ensemble disagreement (Plan2Explore, Sekar et al., ICML 2020) as a TorchRL transform.

    ``K`` small heads ``f_k(feat_t, a_t) -> stoch_{t+1}`` are trained by regression on replayed
    transitions; where they disagree the model has not yet learned the dynamics, so the reward
    for arriving at ``s_{t+1}`` is the ensemble spread averaged over the target dims::

        r_int[t+1] = scale * mean_j std_k( f_k(feat_t, a_t)_j )        (population std over k)
        r_int[0]   = 0                                                  (no transition into it)
        total      = r + r_int

    A negative ``scale`` turns the bonus into a penalty on model uncertainty, as MOPO (Yu et al.,
    NeurIPS 2020) uses it: the actor is kept where the world model has data, instead of being
    sent where it has none.

    Training (:meth:`world_model_update`, called by the agent after each world-model update on
    the replay batch ``[B, T]``, all inputs detached): in the replay layout ``action[t]`` is the
    action that led to ``o_t``, so the pairs are ``(feat[:, t], action[:, t+1]) -> target[:, t+1]``
    with the loss ``sum_k mean_{b,t,j} (f_k - target)^2`` (steps with ``is_first[:, t+1]``
    masked out), one Adam step with gradient-norm clipping. The heads see the same data and
    differ by their initialisation, as in the paper. In imagination ``action[t]`` is the action
    taken at ``s_t``, so there the pairs are ``(feat[:, t], action[:, t])``. The reward is
    computed without gradient (the ensemble is not trained by the actor).

    Non-finite inputs: in :meth:`world_model_update` a transition whose ``feat``, ``action`` or
    target holds a NaN/inf is masked out of the loss like an ``is_first`` step (its inputs are
    zeroed before the ensemble sees them, so no NaN reaches the gradients); a batch without a
    single valid transition gives a zero loss and zero gradients and leaves ``last_loss`` as it
    was (Adam's momentum still makes its step: there is no host-synchronising skip). In the
    reward, a step whose spread is not finite (non-finite ``feat``/``action``, or a diverged
    ensemble) gets ``r_int = 0`` and is kept out of the statistics (see
    :class:`IntrinsicRewardTransform`).

    Use: trajectories ``[..., T]`` through ``transform(td)`` (the last batch dim is time), or
    appended to a TorchRL model-based env, where ``feat`` and ``action`` are read from the step-t
    TensorDict (or ``feat_fn(state)`` when ``feat`` is absent).

    Args:
        feat_dim, action_dim, target_dim: sizes of ``feat``, ``action`` and the predicted latent.
        ensemble_size: ``K`` (>= 2). hidden, layers: size of each head.
        lr: Adam learning rate of the ensemble (finite, > 0). grad_clip: max gradient norm (> 0;
            ``inf`` = no clipping).
        scale: coefficient of the disagreement (finite; > 0 explores, < 0 penalises uncertainty).
        center, center_decay: subtract a running mean of ``r_int`` (see :class:`IntrinsicRewardTransform`).
        feat_key, action_key: inputs. target_key: the next latent in ``world_model_update``'s
            TensorDict (RSSM: ``("posterior", "stoch")``; VTA: ``("posterior", "obs_stoch")``).
        is_first_key: episode-start flags in the replay batch (optional there).
        feat_fn, state_key: compute ``feat`` from ``state`` in the env path when ``feat`` is absent.
        reward_key, intrinsic_key, total_reward_key: see :class:`IntrinsicRewardTransform`.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> t = DisagreementIntrinsicReward(feat_dim=8, action_dim=2, target_dim=4, hidden=16)
        >>> wm = TensorDict({"feat": torch.randn(3, 5, 8), "action": torch.randn(3, 5, 2),
        ...                  "posterior": {"stoch": torch.randn(3, 5, 4)}}, [3, 5])
        >>> sorted(t.world_model_update(wm))
        ['ensemble_loss']
        >>> traj = TensorDict({"feat": torch.randn(6, 4, 8), "action": torch.randn(6, 4, 2),
        ...                    "reward": torch.zeros(6, 4, 1)}, [6, 4])
        >>> t(traj)["intrinsic_reward"][:, 0].abs().sum().item()
        0.0
    """

    def __init__(
        self,
        *,
        feat_dim: int,
        action_dim: int,
        target_dim: int,
        ensemble_size: int = 5,
        hidden: int = 256,
        layers: int = 2,
        lr: float = 3e-4,
        grad_clip: float = 100.0,
        scale: float = 1.0,
        center: bool = False,
        center_decay: float = 0.99,
        feat_key: NestedKey = "feat",
        action_key: NestedKey = "action",
        target_key: NestedKey = ("posterior", "stoch"),
        is_first_key: NestedKey = "is_first",
        feat_fn: Callable[[TensorDictBase], torch.Tensor] | None = None,
        state_key: NestedKey = "state",
        reward_key: NestedKey = "reward",
        intrinsic_key: NestedKey = "intrinsic_reward",
        total_reward_key: NestedKey = "total_reward",
    ):
        super().__init__(
            reward_key=reward_key,
            intrinsic_key=intrinsic_key,
            total_reward_key=total_reward_key,
            extra_in_keys=[feat_key, action_key],
            center=center,
            center_decay=center_decay,
        )
        lr = check_finite_positive("lr", lr)
        if not float(grad_clip) > 0:
            raise ValueError(f"grad_clip must be > 0, got {grad_clip}")
        self.scale = check_finite("scale", scale)
        self.grad_clip = float(grad_clip)
        self.feat_dim, self.action_dim, self.target_dim = int(feat_dim), int(action_dim), int(target_dim)
        self.ensemble = EnsembleMLP(
            self.feat_dim + self.action_dim, self.target_dim, ensemble_size=ensemble_size, hidden=hidden, layers=layers
        )
        # Its own optimiser: the ensemble is trained on the world model's data, never by the actor.
        self.optimizer = torch.optim.Adam(self.ensemble.parameters(), lr=float(lr), eps=1e-5)
        self.feat_key, self.action_key, self.target_key = feat_key, action_key, target_key
        self.is_first_key, self.feat_fn, self.state_key = is_first_key, feat_fn, state_key
        self.register_buffer("last_loss", torch.zeros(()))
        self.register_buffer("last_disagreement", torch.zeros(()))

    # -- training ---------------------------------------------------------------------------------
    def world_model_update(self, wm_td: TensorDictBase) -> dict[str, torch.Tensor]:
        """One regression step of the ensemble on a replay batch ``[B, T]`` (see class docstring).

        Returns ``{"ensemble_loss": mean member MSE}`` (0-d, detached) for logging.
        """
        feat = self._get(wm_td, self.feat_key, "the world-model features").detach()
        action = self._get(wm_td, self.action_key, "the replayed actions").detach()
        target = self._get(wm_td, self.target_key, "the next-latent target").detach()
        if feat.ndim < 3 or feat.shape[-2] < 2:
            raise ValueError(
                f"world_model_update needs sequences [B, T>=2, F] under {self.feat_key!r}, got {tuple(feat.shape)}"
            )
        if target.shape[-1] != self.target_dim:
            raise ValueError(
                f"{self.target_key!r} has {target.shape[-1]} dims, the ensemble predicts target_dim={self.target_dim}"
            )
        x = torch.cat([feat[..., :-1, :], action[..., 1:, :].to(feat.dtype)], -1)
        y = target[..., 1:, :].to(feat.dtype)
        # transitions with a non-finite input or target: masked out, their values replaced by 0
        finite = torch.isfinite(x).all(-1, keepdim=True) & torch.isfinite(y).all(-1, keepdim=True)  # [B,T-1,1]
        x = torch.where(finite, x, torch.zeros_like(x))
        y = torch.where(finite, y, torch.zeros_like(y))
        mask = finite[..., 0]
        is_first = wm_td.get(self.is_first_key, None)
        if is_first is not None:
            mask = mask & ~is_first[..., 1:, 0].bool()
        with torch.enable_grad():
            err = (self.ensemble(x) - y).pow(2).mean(-1)  # [K, B, T-1]
            valid = mask.to(err.dtype).expand_as(err)
            per_member = (err * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1.0)
            loss = per_member.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.ensemble.parameters(), self.grad_clip)
            self.optimizer.step()
        self.last_loss.copy_(torch.where(mask.any(), per_member.detach().mean(), self.last_loss))
        # the agent logs these under "intrinsic/<key>"
        return {"ensemble_loss": self.last_loss.clone()}

    def optimizer_state_dict(self) -> dict:
        """State of the ensemble's Adam (for checkpoints; plain tensors)."""
        return self.optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    # -- reward -----------------------------------------------------------------------------------
    def disagreement(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``mean_j std_k f_k(feat, action)_j`` -> ``[..., 1]``, without gradient."""
        with torch.no_grad():
            pred = self.ensemble(torch.cat([feat.detach(), action.detach().to(feat.dtype)], -1))
            return pred.std(0, correction=0).mean(-1, keepdim=True)

    def _intrinsic(self, td, reward, update, prev):
        if prev is None:  # trajectory: [..., T], the last batch dim is time
            feat = self._get(td, self.feat_key, "the imagined features")
            action = self._get(td, self.action_key, "the imagined actions")
            if td.batch_dims < 1:
                raise ValueError("DisagreementIntrinsicReward on a trajectory needs a time batch dim [..., T]")
            spread = self.disagreement(feat[..., :-1, :], action[..., :-1, :])
            intrinsic = torch.cat([torch.zeros_like(spread[..., :1, :]), spread], -2)
        else:  # env step: prev holds s_t and a_t, td is s_{t+1}
            feat = prev.get(self.feat_key, None)
            if feat is None:
                if self.feat_fn is None:
                    raise KeyError(
                        f"DisagreementIntrinsicReward needs {self.feat_key!r} in the step TensorDict or a feat_fn"
                    )
                feat = self.feat_fn(self._get(prev, self.state_key, "the latent state"))
            intrinsic = self.disagreement(feat, self._get(prev, self.action_key, "the action"))
        valid = torch.isfinite(intrinsic)
        intrinsic = torch.where(valid, intrinsic, torch.zeros_like(intrinsic))
        mean, any_valid = masked_mean(intrinsic, valid)
        self.last_disagreement.copy_(torch.where(any_valid, mean, self.last_disagreement))
        return (self.scale * intrinsic).to(reward.dtype), valid

    def metrics(self) -> dict[str, torch.Tensor]:
        out = super().metrics()
        out.update(
            {
                "intrinsic/scale": torch.tensor(self.scale),
                "intrinsic/disagreement": self.last_disagreement.clone(),
                "intrinsic/ensemble_loss": self.last_loss.clone(),
            }
        )
        return out
