"""``DreamerAgent``: world model, actor, critic, their losses and optimisers, one ``train_step``.

Hafner et al. 2023 (DreamerV3); the defaults are the 2023 paper's (``configs/agent/default.yaml``),
``configs/agent/v3_2024.yaml`` selects the 2024 reference code's recipe (LaProp with adaptive
gradient clipping and warm-up, the replay value loss, ``dyn_scale`` 1, actor output init 0.01).
One update on a replayed batch ``[B, T]``:

1. world-model loss and optimiser step (Adam lr 1e-4, eps 1e-8, grad-norm clip 1000; or LaProp);
2. ``intrinsic.world_model_update(wm_td)`` if the intrinsic-reward transform learns (Plan2Explore);
3. imagination of ``H`` steps from all ``B*T`` posterior states (detached), :func:`imagine`;
4. ``("decoded", "image_std")`` (the decoder's mean predicted std per step, for image or vector
   observations) if ``intrinsic.needs_decoder_std``; ``intrinsic(traj)`` if set;
5. value targets (lambda-returns, weights), actor loss (REINFORCE) and critic loss, plus, when
   ``repval_scale > 0``, the replay value loss (:class:`~imwm.objectives.ReplayValueLoss`, its
   returns bootstrapped by step 3's imagination returns); one backward, optimiser steps
   (Adam lr 3e-5, eps 1e-5, clip 100 each; or LaProp);
6. slow-critic EMA update.

Metrics come back as 0-d tensors. Both optimiser phases run :func:`imwm.agent.optimization.guarded_step`,
whose non-finite guard is the one host sync per phase: a NaN or infinite loss or gradient norm
skips that phase's optimiser steps (optimiser state, LaProp's warm-up count included, untouched),
is counted, and after ``max_nonfinite_updates`` skipped updates in a row raises
:class:`NonFiniteUpdateError` naming the loss term and the update, before anything diverged can
be saved.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from imwm.agent.compile import (COMPILE_SCOPES, SCOPE_PHASES, SCOPE_STEPS, CompiledPhase, CompiledSteps,
                                check_compile_with_boundary_grad, parse_compile_mode)
from imwm.agent.imagine import imagine
from imwm.agent.optimization import OPTIMIZERS, NonFiniteGuard, guarded_step, make_optimizer
from imwm.agent.policy import DreamerPolicy
from imwm.errors import check_bool, check_integer
from imwm.nn.optim import check_laprop_options
from imwm.objectives.actor import ActorLoss
from imwm.objectives.critic import CriticLoss
from imwm.objectives.replay_value import ReplayValueLoss

__all__ = ["DreamerAgent"]

#: accepted values of ``agent.precision``
PRECISIONS = ("float32", "bfloat16")


def _check_recipe(*, horizon, grad_clips, optimizer, betas, agc, agc_pmin, warmup, precision,
                  repval_scale) -> None:
    """One-line ``ValueError`` naming the first bad optimisation or recipe argument of :class:`DreamerAgent`."""
    check_integer("horizon", horizon)
    for name, clip in zip(("model", "actor", "critic"), grad_clips):
        if not clip > 0:
            raise ValueError(f"{name}_grad_clip must be > 0 (.inf = no clipping), got {clip}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    check_laprop_options(betas=betas, agc=agc, agc_pmin=agc_pmin, warmup=warmup)
    if optimizer == "adam":  # AGC and warm-up are parts of LaProp here, as in the 2024 code
        for name, value in (("agc", agc), ("warmup", warmup)):
            if value:
                raise ValueError(f"{name} must be 0 with optimizer=adam (it is a LaProp option), got {value}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if not (math.isfinite(repval_scale) and repval_scale >= 0):
        raise ValueError(f"repval_scale must be a finite number >= 0, got {repval_scale}")


def _check_contdisc(world_model: nn.Module, world_model_loss: nn.Module, *, contdisc: bool, gamma: float) -> None:
    """The loss must be built on ``world_model``, with the continue target ``contdisc`` needs."""
    check_bool("contdisc", contdisc)
    target = getattr(world_model_loss, "continue_discount", 1.0)
    if target != (gamma if contdisc else 1.0):
        raise ValueError(
            f"contdisc={contdisc} needs the world-model loss built with continue_discount="
            f"{gamma if contdisc else 1.0} (the continue head's target), got {target}"
        )
    if getattr(world_model_loss, "world_model", world_model) is not world_model:
        raise ValueError("world_model_loss must be built on the same world_model")


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
        contdisc: the discount lives inside the continue prediction, as in DreamerV3's 2024 code
            (``contdisc: True``): the continue head is trained towards ``gamma`` at non-terminal
            records (``world_model_loss`` must be built with ``continue_discount=gamma``) and
            imagined returns and weights multiply by its output alone. ``False`` (2023 paper):
            the head predicts the probability of going on and ``gamma`` multiplies it once.
        model_lr, model_eps, model_grad_clip, actor_*, critic_*: learning rate, epsilon and
            global-norm clipping per group (2023 paper: Adam 1e-4 / 1e-8 / 1000 for the model,
            3e-5 / 1e-5 / 100 for actor and critic; 2024 code: one optimiser, lr 4e-5, eps 1e-20,
            no global-norm clipping, i.e. ``.inf`` here: the norm is then only measured).
        optimizer: ``"adam"`` (2023 paper) or ``"laprop"`` (2024 code, :class:`imwm.nn.optim.LaProp`).
        beta1, beta2: momentum and second-moment decays of either optimiser (both: 0.9, 0.999).
        agc, agc_pmin, warmup: LaProp's adaptive gradient clipping ratio (2024: 0.3; 0 = off), its
            parameter-norm floor (1e-3) and linear warm-up steps (2024: 1000; 0 = off); must stay
            0 with Adam.
        repval_scale: weight of the replay value loss (2024: 0.3; 0 = off, the 2023 paper), see
            :class:`~imwm.objectives.ReplayValueLoss`. It regresses on replayed *extrinsic*
            rewards, so with an intrinsic reward on it pulls the critic towards extrinsic returns
            (a warning says so).
        compile: ``false`` (eager), ``default``, ``max-autotune`` or ``reduce-overhead`` (CUDA
            graphs on GPU); ``True`` means ``default``. Each phase of the update (world-model
            forward; imagination + behaviour losses) becomes one ``torch.compile(fullgraph=True)``
            program, its backward a second one (:mod:`imwm.agent.compile`); a phase whose
            compilation fails warns once and runs eagerly. Must be ``false`` with a VTA dynamics
            whose ``boundary_grad`` is ``"local"``.
        compile_scope: ``"phase"`` (whole phases, loops unrolled: fewest kernels, a cold compile
            that grows with the sequence length) or ``"step"`` (the loops' bodies, the
            dynamics' ``observe_cell`` and ``img_step`` and the actor's forward, each compiled
            once, and whole the pieces without a recurrent loop: encoder, world-model heads and
            losses, behaviour losses; the rest eager) or ``"observe_step"`` (the world model as
            in ``step``, imagination and behaviour losses as one program). See
            :mod:`imwm.agent.compile`.
        precision: ``"float32"`` or ``"bfloat16"``: the forward passes of the update run under
            ``torch.autocast`` with bfloat16, as the reference code computes (danijar/dreamerv3,
            ``compute_dtype: bfloat16``): matmuls and convolutions in bfloat16, every
            distribution (categorical and two-hot logits, continue logit, reconstruction error)
            in float32; weights, gradients and optimiser states stay float32 and acting is not
            affected. Pays on hardware with bfloat16 matrix units (GPUs; CPUs with AMX).
        greedy_every: every ``greedy_every``-th training episode of each env acts greedily (the
            actor's mode), 0 = never (the reference: always sampled); see :class:`DreamerPolicy`.
        max_nonfinite_updates: skipped (non-finite) updates in a row after which
            :meth:`train_step` raises :class:`NonFiniteUpdateError`.

    Attributes:
        gradient_sync: ``fn(params)`` called after each backward pass on that phase's
            parameters, or None (data-parallel training averages gradients there).
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
        contdisc: bool = False,
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
        optimizer: str = "adam",
        beta1: float = 0.9,
        beta2: float = 0.999,
        agc: float = 0.0,
        agc_pmin: float = 1e-3,
        warmup: int = 0,
        repval_scale: float = 0.0,
        compile: bool | str = False,
        compile_scope: str = "phase",
        precision: str = "float32",
        greedy_every: int = 0,
        max_nonfinite_updates: int = 5,
    ) -> None:
        super().__init__()
        self.guard = NonFiniteGuard(max_nonfinite_updates)  # skipped updates, in a row and in all
        _check_recipe(horizon=horizon, grad_clips=(model_grad_clip, actor_grad_clip, critic_grad_clip),
                      optimizer=optimizer, betas=(beta1, beta2), agc=agc, agc_pmin=agc_pmin, warmup=warmup,
                      precision=precision, repval_scale=repval_scale)
        _check_contdisc(world_model, world_model_loss, contdisc=contdisc, gamma=gamma)
        self.precision, self.contdisc = precision, contdisc
        self.world_model, self.actor, self.critic = world_model, actor, critic
        self.horizon = int(horizon)
        self.model_grad_clip = float(model_grad_clip)
        self.actor_grad_clip = float(actor_grad_clip)
        self.critic_grad_clip = float(critic_grad_clip)
        self._attach_losses(world_model_loss, gamma=gamma, lmbda=lmbda, entropy_coef=entropy_coef,
                            retnorm=dict(decay=retnorm_decay, low=retnorm_low, high=retnorm_high,
                                         min_scale=retnorm_min_scale),
                            slow_critic=dict(fraction=slow_critic_fraction, scale=slow_critic_scale),
                            repval_scale=repval_scale)
        self._warned_repval_intrinsic = False
        self.intrinsic = None
        self.optimizer = optimizer
        shared = dict(betas=(beta1, beta2), agc=agc, agc_pmin=agc_pmin, warmup=warmup)
        self.model_opt = make_optimizer(optimizer, world_model.parameters(), lr=model_lr, eps=model_eps,
                                        name="model", **shared)
        self.actor_opt = make_optimizer(optimizer, actor.parameters(), lr=actor_lr, eps=actor_eps,
                                        name="actor", **shared)
        self.critic_opt = make_optimizer(optimizer, critic.parameters(), lr=critic_lr, eps=critic_eps,
                                         name="critic", **shared)
        self.num_updates = 0  # completed train_steps; saved in state_dict (extra state)
        # called on each phase's parameters after its backward (data-parallel runs average the
        # gradients over processes here; imwm.training.distributed)
        self.gradient_sync = None
        self.greedy_every = check_integer("greedy_every", greedy_every, 0)  # at build: the error names agent.greedy_every
        self._set_up_compilation(compile, compile_scope)

    def _attach_losses(self, world_model_loss: nn.Module, *, gamma: float, lmbda: float, entropy_coef: float,
                       retnorm: dict, slow_critic: dict, repval_scale: float) -> None:
        """The actor, critic and replay-value losses on this agent's networks.

        The losses share the networks, so they are kept out of ``_modules`` (every weight appears
        once in ``state_dict``); their own state is registered by name (``retnorm``, ``slow_critic``).
        """
        critic_loss = CriticLoss(
            self.critic,
            gamma=1.0 if self.contdisc else gamma,  # with contdisc the continue prediction holds gamma
            lmbda=lmbda, slow_critic_fraction=slow_critic["fraction"], slow_critic_scale=slow_critic["scale"],
        )
        losses = {
            "world_model_loss": world_model_loss,
            "actor_loss": ActorLoss(self.actor, entropy_coef=entropy_coef, retnorm_decay=retnorm["decay"],
                                    retnorm_low=retnorm["low"], retnorm_high=retnorm["high"],
                                    retnorm_min_scale=retnorm["min_scale"]),
            "critic_loss": critic_loss,
            "replay_value_loss": ReplayValueLoss(self.critic, critic_loss.slow_critic, gamma=gamma, lmbda=lmbda,
                                                 slow_critic_scale=slow_critic["scale"], scale=repval_scale),
        }
        for name, loss in losses.items():
            object.__setattr__(self, name, loss)
        self.retnorm = self.actor_loss.retnorm
        self.slow_critic = self.critic_loss.slow_critic
        self.repval_scale = float(repval_scale)

    def _set_up_compilation(self, compile: bool | str, compile_scope: str) -> None:
        """The update's phases and step functions, compiled as ``compile`` and ``compile_scope`` say."""
        self.compile_mode = parse_compile_mode(compile)
        dynamics = self.world_model.dynamics
        check_compile_with_boundary_grad(self.compile_mode, getattr(dynamics, "boundary_grad", None))
        if compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"compile_scope must be one of {list(COMPILE_SCOPES)}, got {compile_scope!r}")
        self.compile_scope = compile_scope
        self.phases = {  # every phase exists in every scope; the scope decides which are compiled
            name: CompiledPhase(getattr(self, f"_{name}"), name=name,
                                mode=self.compile_mode if name in SCOPE_PHASES[compile_scope] else "false")
            for name in SCOPE_PHASES["phase"]
        }
        step_targets = {"encoder": (self.world_model.encoder, "forward"), "observe_cell": (dynamics, "observe_cell"),
                        "heads_and_losses": (self.world_model_loss, "heads_and_losses"),
                        "img_step": (dynamics, "img_step"), "actor": (self.actor, "forward")}
        self.steps = CompiledSteps([step_targets[name] for name in SCOPE_STEPS[compile_scope]], mode=self.compile_mode)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        return {"num_updates": int(self.num_updates), "nonfinite_total": int(self.guard.total)}

    def set_extra_state(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        self.guard.total = int(state.get("nonfinite_total", 0))

    @property
    def nonfinite_streak(self) -> int:
        """Updates skipped in a row for a non-finite loss or gradient norm."""
        return self.guard.streak

    @property
    def nonfinite_total(self) -> int:
        """Updates skipped in all (saved in ``state_dict``)."""
        return self.guard.total

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True):
        super().train(mode)
        for loss in (self.world_model_loss, self.actor_loss, self.critic_loss, self.replay_value_loss):
            loss.train(mode)
        return self

    # ------------------------------------------------------------------ pieces
    @property
    def _programs(self) -> dict[str, CompiledPhase]:
        phases = {name: self.phases[name] for name in SCOPE_PHASES[self.compile_scope]}
        return {**self.steps.programs, **phases}

    @property
    def compiled(self) -> bool:
        """Every program of the compile scope (phases, or loop steps) runs compiled."""
        return all(program.compiled for program in self._programs.values())

    @property
    def compile_seconds(self) -> dict[str, float]:
        """Wall time of each program's first compiled call (compiled programs that have run)."""
        return {n: p.compile_seconds for n, p in self._programs.items() if p.compile_seconds is not None}

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
            ``metrics``: dict of detached 0-d tensors (the ``loss_*`` terms, ``world_model_loss``,
            KL, return scale, grad norms, ...);
            ``signals``: TensorDict ``[B]`` with ``model_loss``, ``kl``, ``entropy`` (detached),
            for the replay samplers.
        """
        if batch.batch_dims != 2:
            raise ValueError(f"train_step expects a replay batch [B, T], got batch size {tuple(batch.batch_size)}")
        with self.steps.installed():
            return self._train_step(batch)

    def _train_step(self, batch: TensorDictBase) -> tuple[dict[str, torch.Tensor], TensorDict]:
        # schedules inside the dynamics (VTA's boundary forcing and temperature) follow the update count
        set_progress = getattr(self.world_model.dynamics, "set_progress", None)
        if set_progress is not None:
            set_progress(self.num_updates)
        if self.repval_scale > 0:
            self._check_replay_value_inputs(batch)

        with self._autocast():
            wm_out = self.phases["world_model_forward"](batch)
        metrics, signals, skipped = self._world_model_step(wm_out, batch.batch_size[:1])
        if skipped:
            return metrics, signals
        posterior = wm_out.get("posterior")
        intrinsic = self.intrinsic
        if intrinsic is not None and hasattr(intrinsic, "world_model_update"):
            # learning intrinsic rewards see the updated model's inputs
            wm_td = TensorDict(
                {"feat": wm_out.get("feat"), "posterior": posterior, "action": batch.get("action"),
                 "is_first": batch.get("is_first")},  # pairs across an episode start are masked
                batch_size=batch.batch_size,
            )
            for key, value in (intrinsic.world_model_update(wm_td) or {}).items():
                metrics[f"intrinsic/{key}"] = value.detach()

        repval_td = self._replay_value_td(batch, wm_out) if self.repval_scale > 0 else None
        is_terminal = batch.get("is_terminal", None)
        with self._autocast():
            if intrinsic is None and "imagine_and_behaviour" in SCOPE_PHASES[self.compile_scope]:
                traj, outs = self.phases["imagine_and_behaviour"](posterior, is_terminal, repval_td)
            else:
                traj = self.phases["imagine_forward"](posterior, is_terminal)
                if intrinsic is not None:
                    traj = self._add_intrinsic(traj)
                outs = self.phases["behaviour_forward"](traj, repval_td)
        behaviour, skipped = self._behaviour_step(outs)
        metrics.update(behaviour)
        if skipped:
            return metrics, signals
        metrics["imagined_reward"] = traj.get("reward").mean()
        metrics["imagined_total_reward"] = traj.get("total_reward").mean()
        metrics["imagined_continue"] = traj.get("continue").mean()
        if "intrinsic_reward" in traj.keys():
            metrics["intrinsic_reward"] = traj.get("intrinsic_reward").detach().mean()
        if intrinsic is not None and hasattr(intrinsic, "metrics"):
            # the transform's own state: its scale, explore/exploit mix or trend weight
            metrics.update(intrinsic.metrics())
        return metrics, signals

    def _autocast(self):
        """bfloat16 autocast for the forward passes (``precision="bfloat16"``), else nothing.

        Entered around the (compiled) phases, not inside them: Dynamo traces the ambient autocast
        state into the graph, and the backward passes replay the dtypes their forwards recorded.
        """
        if self.precision == "float32":
            return contextlib.nullcontext()
        device = self.model_opt.param_groups[0]["params"][0].device.type
        return torch.autocast(device, dtype=torch.bfloat16)

    # the compiled programs: pure functions of their inputs and the modules' state
    def _world_model_forward(self, batch: TensorDictBase) -> TensorDict:
        return self.world_model_loss(batch)

    def _imagine_forward(self, posterior: TensorDictBase, is_terminal: torch.Tensor | None) -> TensorDict:
        return self.imagine(posterior, is_terminal)

    def _behaviour_forward(self, traj: TensorDictBase, repval_td: TensorDictBase | None) -> list[TensorDict]:
        self.critic_loss.targets(traj)
        outs = [self.actor_loss(traj), self.critic_loss(traj)]
        if repval_td is not None:
            outs.append(self.replay_value_loss(self._with_bootstrap(repval_td, traj)))
        return outs

    @staticmethod
    def _with_bootstrap(repval_td: TensorDictBase, traj: TensorDictBase) -> TensorDictBase:
        """``repval_td`` plus ``bootstrap``: the imagination return ``R_0`` from each posterior
        state (imagination starts are the ``B*T`` posterior states flattened row-major)."""
        bootstrap = traj.get("return")[:, 0].detach().reshape(*repval_td.batch_size, 1)
        return repval_td.copy().set("bootstrap", bootstrap)

    def _imagine_and_behaviour(self, posterior, is_terminal, repval_td) -> tuple[TensorDict, list[TensorDict]]:
        traj = self._imagine_forward(posterior, is_terminal)
        return traj, self._behaviour_forward(traj, repval_td)

    # the eager steps between them
    def _world_model_step(self, wm_out: TensorDictBase, batch_size) -> tuple[dict, TensorDict, bool]:
        """Backward, non-finite guard and optimiser step of the world model."""
        terms = {k: v for k, v in wm_out.items() if k.startswith("loss_")}
        (grad_norm,), skipped = guarded_step(
            terms, [(list(self.world_model.parameters()), self.model_opt, self.model_grad_clip)],
            guard=self.guard, phase="world model", update=self.num_updates, gradient_sync=self.gradient_sync)
        metrics = {k: v.detach() for k, v in wm_out.items() if isinstance(v, torch.Tensor) and v.ndim == 0}
        metrics.update(grad_norm_model=grad_norm, **(skipped or {}))
        signals = TensorDict({k: wm_out.get(k) for k in ("model_loss", "kl", "entropy")}, batch_size=batch_size)
        return metrics, signals, skipped is not None

    def _add_intrinsic(self, traj: TensorDict) -> TensorDict:
        intrinsic = self.intrinsic
        if getattr(intrinsic, "needs_decoder_std", False):
            traj.set(("decoded", "image_std"), self.decoded_image_std(traj.get("feat")))
        traj = intrinsic(traj)
        if "total_reward" not in traj.keys():
            raise KeyError(f"intrinsic transform {type(intrinsic).__name__} did not write 'total_reward'")
        return traj

    def _behaviour_step(self, outs: list[TensorDictBase]) -> tuple[dict[str, torch.Tensor], bool]:
        """Backward, non-finite guard and optimiser steps of actor and critic; slow-critic update."""
        terms = {k: v for out in outs for k, v in out.items() if k.startswith("loss_")}
        (grad_actor, grad_critic), skipped = guarded_step(
            terms, [(list(self.actor.parameters()), self.actor_opt, self.actor_grad_clip),
                    (list(self.critic.parameters()), self.critic_opt, self.critic_grad_clip)],
            guard=self.guard, phase="behaviour", update=self.num_updates, gradient_sync=self.gradient_sync)
        if skipped is not None:
            return skipped, True
        self.guard.passed()
        self.critic_loss.update_slow_critic()
        self.num_updates += 1
        metrics = {k: v.detach() for out in outs for k, v in out.items()}
        metrics.update(grad_norm_actor=grad_actor, grad_norm_critic=grad_critic, nonfinite_skipped=torch.zeros(()))
        return metrics, False

    def _check_replay_value_inputs(self, batch: TensorDictBase) -> None:
        missing = [k for k in ("reward", "is_terminal", "is_last") if k not in batch.keys()]
        if missing:
            raise KeyError(f"agent.repval_scale > 0 needs {missing} in the replay batch (docs/architecture.md)")
        if self.intrinsic is not None and not self._warned_repval_intrinsic:
            self._warned_repval_intrinsic = True
            warnings.warn("agent.repval_scale > 0 with an intrinsic reward: the replay value loss sees "
                          "extrinsic rewards only, the imagination critic loss the total reward", stacklevel=3)

    @staticmethod
    def _replay_value_td(batch: TensorDictBase, wm_out: TensorDictBase) -> TensorDict:
        """The replay value loss's inputs ``[B, T]`` but its bootstrap: posterior features and
        the replayed reward and flags."""
        # A stream window may run from an episode that was cut without an is_last record (the
        # envs restart episodes at a resume) into the next one's is_first: end the returns there.
        is_last = batch.get("is_last").bool()
        if "is_first" in batch.keys():
            next_first = torch.zeros_like(is_last)
            next_first[:, :-1] = batch.get("is_first").bool()[:, 1:]
            is_last = is_last | next_first
        return TensorDict(
            {"feat": wm_out.get("feat"), "reward": batch.get("reward"),
             "is_terminal": batch.get("is_terminal"), "is_last": is_last},
            batch_size=batch.batch_size,
        )

    # ------------------------------------------------------------------ acting
    def policy(self, num_envs: int, *, action_dtype: torch.dtype = torch.float32) -> DreamerPolicy:
        """A fresh acting policy for ``num_envs`` environments (see :class:`DreamerPolicy`)."""
        return DreamerPolicy(self.world_model.encoder, self.world_model.dynamics, self.actor, num_envs,
                             action_dtype=action_dtype, greedy_every=self.greedy_every)

    # ------------------------------------------------------------------ checkpoints
    def optimizers_state_dict(self) -> dict:
        """States of the three optimisers (plain tensors and numbers) and their ``kind``."""
        return {
            "kind": self.optimizer,
            "model": self.model_opt.state_dict(),
            "actor": self.actor_opt.state_dict(),
            "critic": self.critic_opt.state_dict(),
        }

    def load_optimizers_state_dict(self, state: dict) -> None:
        missing = {"model", "actor", "critic"} - set(state)
        if missing:
            raise KeyError(f"optimizer state lacks {sorted(missing)}")
        kind = state.get("kind", "adam")  # states saved before LaProp existed are Adam's
        if kind != self.optimizer:
            raise ValueError(f"the saved optimiser states are {kind}'s but agent.optimizer={self.optimizer}; "
                             "resume with the optimizer the run was started with")
        self.model_opt.load_state_dict(state["model"])
        self.actor_opt.load_state_dict(state["actor"])
        self.critic_opt.load_state_dict(state["critic"])
