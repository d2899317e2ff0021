"""``DreamerAgent``: world model, actor, critic, their losses and optimisers, one ``train_step``.

Hafner et al. 2023 (DreamerV3). One update on a replayed batch ``[B, T]``:

1. world-model loss and Adam step (lr 1e-4, eps 1e-8, grad-norm clip 1000);
2. ``intrinsic.world_model_update(wm_td)`` if the intrinsic-reward transform learns (Plan2Explore);
3. imagination of ``H`` steps from all ``B*T`` posterior states (detached), :func:`imagine`;
4. ``("decoded", "image_std")`` (the decoder's mean predicted std per step, for image or vector
   observations) if ``intrinsic.needs_decoder_std``; ``intrinsic(traj)`` if set;
5. value targets (lambda-returns, weights), actor loss (REINFORCE) and critic loss, one backward,
   Adam steps (lr 3e-5, eps 1e-5, clip 100 each);
6. slow-critic EMA update.

No ``.item()`` or other host syncs: metrics come back as 0-d tensors.
"""

from __future__ import annotations

import warnings

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from imwm.agent.imagine import imagine
from imwm.agent.policy import DreamerPolicy
from imwm.objectives.actor import ActorLoss
from imwm.objectives.critic import CriticLoss

__all__ = ["DreamerAgent"]


def _adam(params, lr: float, eps: float, name: str) -> torch.optim.Adam:
    if lr <= 0:
        raise ValueError(f"{name}_lr must be > 0, got {lr}")
    if eps <= 0:
        raise ValueError(f"{name}_eps must be > 0, got {eps}")
    params = list(params)
    try:
        # the fused kernel is the same Adam update; on CPU it measured ~8x faster than the
        # per-tensor loop for DreamerV3-size parameter lists
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=eps)


def _compile_with_fallback(module: nn.Module, name: str) -> None:
    try:
        compiled = torch.compile(module._call_impl, dynamic=False)
    except Exception as err:  # compile is an optimisation, never a requirement
        warnings.warn(f"DreamerAgent: torch.compile({name}) failed ({err!r}); running it eagerly")
        return

    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except Exception as err:
            warnings.warn(f"DreamerAgent: compiled {name} failed ({type(err).__name__}: {err}); running it eagerly")
            module._compiled_call_impl = None
            return module._call_impl(*args, **kwargs)

    module._compiled_call_impl = call


class DreamerAgent(nn.Module):
    """A DreamerV3 agent around any :class:`~imwm.dynamics.Dynamics`.

    Args:
        world_model: :class:`imwm.world_model.WorldModel` (``encoder``, ``dynamics``, ``decoder``,
            ``reward_head``, ``continue_head``).
        world_model_loss: :class:`imwm.objectives.WorldModelLoss` built on ``world_model``.
        actor: :class:`~imwm.agent.Actor`.
        critic: :class:`~imwm.agent.Critic`.
        horizon, gamma, lmbda, entropy_coef, retnorm_*, slow_critic_*: see
            :class:`~imwm.objectives.ActorLoss` / :class:`~imwm.objectives.CriticLoss`.
        model_lr, model_eps, model_grad_clip, actor_*, critic_*: Adam and clipping per group.
        compile: ``torch.compile`` the actor, critic and heads' hot calls (falls back to eager,
            with a warning, when compilation fails).

    Attributes:
        intrinsic: a ``torchrl.envs.transforms.Transform`` applied to each imagined trajectory
            (writes ``total_reward``), or None. Settable at any time. One with
            ``needs_decoder_std = True`` (LEXA-style) finds ``("decoded", "image_std")``
            ``[N, H+1, 1]`` in the trajectory: the decoder's mean predicted std per imagined step
            (over pixels for images; over dims of the vector decoder's ``vector_std`` for vector
            observations; see :meth:`decoded_image_std`).

    ``state_dict()`` holds the weights of all networks (``world_model.*``, ``actor.*``,
    ``critic.*``, ``slow_critic.*``), the return normaliser (``retnorm.*``), the update count
    (``_extra_state``: ``{"num_updates": int}``; a dynamics with ``set_progress(update)``, such as
    VTA's schedules, is told it before every update) and, when set, the intrinsic transform's;
    optimisers are saved apart with :meth:`optimizers_state_dict`.
    """

    def __init__(
        self,
        world_model: nn.Module,
        world_model_loss: nn.Module,
        actor: nn.Module,
        critic: nn.Module,
        *,
        horizon: int = 15,
        gamma: float = 0.997,
        lmbda: float = 0.95,
        entropy_coef: float = 3e-4,
        retnorm_decay: float = 0.99,
        retnorm_low: float = 5.0,
        retnorm_high: float = 95.0,
        retnorm_min_scale: float = 1.0,
        slow_critic_fraction: float = 0.02,
        slow_critic_scale: float = 1.0,
        model_lr: float = 1e-4,
        model_eps: float = 1e-8,
        model_grad_clip: float = 1000.0,
        actor_lr: float = 3e-5,
        actor_eps: float = 1e-5,
        actor_grad_clip: float = 100.0,
        critic_lr: float = 3e-5,
        critic_eps: float = 1e-5,
        critic_grad_clip: float = 100.0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        for name, clip in (("model", model_grad_clip), ("actor", actor_grad_clip), ("critic", critic_grad_clip)):
            if clip <= 0:
                raise ValueError(f"{name}_grad_clip must be > 0, got {clip}")
        if getattr(world_model_loss, "world_model", world_model) is not world_model:
            raise ValueError("world_model_loss must be built on the same world_model")
        self.world_model = world_model
        self.actor = actor
        self.critic = critic
        self.horizon = int(horizon)
        self.model_grad_clip = float(model_grad_clip)
        self.actor_grad_clip = float(actor_grad_clip)
        self.critic_grad_clip = float(critic_grad_clip)
        # the losses share the networks above; kept out of _modules so every weight appears once
        # in state_dict, their own state is registered by name below
        object.__setattr__(self, "world_model_loss", world_model_loss)
        object.__setattr__(
            self,
            "actor_loss",
            ActorLoss(
                actor,
                entropy_coef=entropy_coef,
                retnorm_decay=retnorm_decay,
                retnorm_low=retnorm_low,
                retnorm_high=retnorm_high,
                retnorm_min_scale=retnorm_min_scale,
            ),
        )
        object.__setattr__(
            self,
            "critic_loss",
            CriticLoss(
                critic,
                gamma=gamma,
                lmbda=lmbda,
                slow_critic_fraction=slow_critic_fraction,
                slow_critic_scale=slow_critic_scale,
            ),
        )
        self.retnorm = self.actor_loss.retnorm
        self.slow_critic = self.critic_loss.slow_critic
        self.intrinsic = None
        self.model_opt = _adam(world_model.parameters(), model_lr, model_eps, "model")
        self.actor_opt = _adam(actor.parameters(), actor_lr, actor_eps, "actor")
        self.critic_opt = _adam(critic.parameters(), critic_lr, critic_eps, "critic")
        self.num_updates = 0  # completed train_steps; saved in state_dict (extra state)
        self.compiled = False
        if compile:
            self._try_compile()

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        return {"num_updates": int(self.num_updates)}

    def set_extra_state(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True):
        super().train(mode)
        for loss in (self.world_model_loss, self.actor_loss, self.critic_loss):
            loss.train(mode)
        return self

    def _try_compile(self) -> None:
        """``torch.compile`` the MLPs that run on the large imagined batches, in place.

        In place (``Module._compiled_call_impl``, what ``nn.Module.compile`` sets) so that
        ``state_dict`` keys do not change. A module whose compiled call raises (no compiler,
        an unsupported op, ...) warns once and runs eagerly from then on.
        """
        wm = self.world_model
        targets = {
            "actor": self.actor,
            "critic": self.critic,
            "slow_critic": self.slow_critic,
            "reward_head": wm.reward_head,
            "continue_head": wm.continue_head,
        }
        for name, module in targets.items():
            _compile_with_fallback(module, name)
        self.compiled = True

    # ------------------------------------------------------------------ pieces
    @property
    def dynamics(self):
        return self.world_model.dynamics

    def imagine(self, start_state: TensorDictBase, start_is_terminal: torch.Tensor | None = None) -> TensorDict:
        """Imagined trajectory ``[N, H+1]`` from ``start_state`` (see :func:`imwm.agent.imagine`)."""
        wm = self.world_model
        return imagine(
            wm.dynamics, self.actor, wm.reward_head, wm.continue_head, start_state, self.horizon,
            start_is_terminal=start_is_terminal,
        )

    @torch.no_grad()
    def decoded_image_std(self, feat: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """Mean predicted decoder std per imagined step, ``[..., 1]`` (LEXA-style curiosity).

        The decoder's ``mean_std(decoded)``: the mean over pixels of the image decoder's std,
        or over dims of the vector decoder's std (the name keeps the ``("decoded",
        "image_std")`` key it fills). Decodes ``chunk`` rows at a time: the N*(H+1) imagined
        frames at once would need gigabytes of activations at DreamerV3 sizes.
        """
        decoder = self.world_model.decoder
        mean_std = getattr(decoder, "mean_std", None)
        if mean_std is None:
            raise ValueError(
                "the intrinsic reward asks for ('decoded', 'image_std') but the decoder "
                f"{type(decoder).__name__} has no mean_std(decoded) method; use the image or vector "
                "decoder with agent.learned_std=true"
            )
        lead = feat.shape[:-1]
        flat = feat.reshape(-1, feat.shape[-1])
        out = [mean_std(decoder(part)) for part in flat.split(chunk)]
        return torch.cat(out).reshape(*lead, 1)

    # ------------------------------------------------------------------ update
    def train_step(self, batch: TensorDictBase) -> tuple[dict[str, torch.Tensor], TensorDict]:
        """One DreamerV3 update on a replay batch ``[B, T]`` (record layout of docs/architecture.md).

        Returns:
            ``metrics``: dict of detached 0-d tensors (losses, KL, return scale, grad norms, ...);
            ``signals``: TensorDict ``[B]`` with ``model_loss``, ``kl``, ``entropy`` (detached),
            for the replay samplers.
        """
        if batch.batch_dims != 2:
            raise ValueError(f"train_step expects a replay batch [B, T], got batch size {tuple(batch.batch_size)}")
        metrics: dict[str, torch.Tensor] = {}
        # schedules inside the dynamics (VTA's boundary forcing and temperature) follow the update count
        set_progress = getattr(self.world_model.dynamics, "set_progress", None)
        if set_progress is not None:
            set_progress(self.num_updates)

        # 1. world model
        wm_out = self.world_model_loss(batch)
        self.model_opt.zero_grad(set_to_none=True)
        wm_out["loss_world_model"].backward()
        metrics["grad_norm_model"] = nn.utils.clip_grad_norm_(self.world_model.parameters(), self.model_grad_clip)
        self.model_opt.step()
        for key, value in wm_out.items():
            if isinstance(value, torch.Tensor) and value.ndim == 0:
                metrics[key] = value.detach()
        signals = TensorDict(
            {k: wm_out.get(k).detach() for k in ("model_loss", "kl", "entropy")},
            batch_size=batch.batch_size[:1],
        )
        posterior = wm_out.get("posterior").detach()

        # 2. learning intrinsic rewards see the updated model's inputs
        intrinsic = self.intrinsic
        if intrinsic is not None and hasattr(intrinsic, "world_model_update"):
            wm_td = TensorDict(
                {"feat": wm_out.get("feat").detach(), "posterior": posterior, "action": batch.get("action"),
                 "is_first": batch.get("is_first")},  # pairs across an episode start are masked
                batch_size=batch.batch_size,
            )
            for key, value in (intrinsic.world_model_update(wm_td) or {}).items():
                metrics[f"intrinsic/{key}"] = value.detach()

        # 3. imagination from every posterior state
        is_terminal = batch.get("is_terminal", None)
        traj = self.imagine(posterior, is_terminal)

        # 4. intrinsic rewards
        if intrinsic is not None:
            if getattr(intrinsic, "needs_decoder_std", False):
                traj.set(("decoded", "image_std"), self.decoded_image_std(traj.get("feat")))
            traj = intrinsic(traj)
            if "total_reward" not in traj.keys():
                raise KeyError(f"intrinsic transform {type(intrinsic).__name__} did not write 'total_reward'")

        # 5. actor and critic
        self.critic_loss.targets(traj)
        actor_out = self.actor_loss(traj)
        critic_out = self.critic_loss(traj)
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        (actor_out["loss_actor"] + critic_out["loss_critic"]).backward()
        metrics["grad_norm_actor"] = nn.utils.clip_grad_norm_(self.actor.parameters(), self.actor_grad_clip)
        metrics["grad_norm_critic"] = nn.utils.clip_grad_norm_(self.critic.parameters(), self.critic_grad_clip)
        self.actor_opt.step()
        self.critic_opt.step()

        # 6. slow critic
        self.critic_loss.update_slow_critic()
        self.num_updates += 1

        for out in (actor_out, critic_out):
            for key, value in out.items():
                metrics[key] = value.detach()
        metrics["imagined_reward"] = traj.get("reward").mean()
        metrics["imagined_total_reward"] = traj.get("total_reward").mean()
        metrics["imagined_continue"] = traj.get("continue").mean()
        if "intrinsic_reward" in traj.keys():
            metrics["intrinsic_reward"] = traj.get("intrinsic_reward").detach().mean()
        if intrinsic is not None and hasattr(intrinsic, "metrics"):
            # the transform's own state: its scale, explore/exploit mix or trend weight
            metrics.update(intrinsic.metrics())
        return metrics, signals

    # ------------------------------------------------------------------ acting
    def policy(self, num_envs: int, *, action_dtype: torch.dtype = torch.float32) -> DreamerPolicy:
        """A fresh acting policy for ``num_envs`` environments (see :class:`DreamerPolicy`)."""
        return DreamerPolicy(
            self.world_model.encoder, self.world_model.dynamics, self.actor, num_envs, action_dtype=action_dtype
        )

    # ------------------------------------------------------------------ checkpoints
    def optimizers_state_dict(self) -> dict:
        """Adam states of the three optimisers (plain tensors and numbers)."""
        return {
            "model": self.model_opt.state_dict(),
            "actor": self.actor_opt.state_dict(),
            "critic": self.critic_opt.state_dict(),
        }

    def load_optimizers_state_dict(self, state: dict) -> None:
        missing = {"model", "actor", "critic"} - set(state)
        if missing:
            raise KeyError(f"optimizer state lacks {sorted(missing)}")
        self.model_opt.load_state_dict(state["model"])
        self.actor_opt.load_state_dict(state["actor"])
        self.critic_opt.load_state_dict(state["critic"])
