"""DreamerV3 world-model loss as a TorchRL ``LossModule``.

Hafner et al., 2023 (DreamerV3), per replayed step t:

``L_t = image_scale * L_image + reward_scale * L_reward + continue_scale * L_cont
+ dyn_scale * max(free_bits, KL(sg(q_t) || p_t)) + rep_scale * max(free_bits, KL(q_t || sg(p_t)))``

with the reward target ``reward[t]`` (two-hot cross entropy on ``symlog``), the continue target
``continue_discount * (1 - is_terminal[t])`` (Bernoulli NLL, terminal records weighted by
``terminal_weight``; the reference weighs every record 1), the image term from the decoder
(squared error summed over pixels, or Gaussian NLL with a learned std), and the KL terms from
``dynamics.kl_loss`` — so a dynamics with its own KL (VTA's boundary-weighted KL and
boundary-rate prior) flows through unchanged. The loss is the mean of ``L_t`` over ``[B, T]``.

Written instead of reusing ``torchrl.objectives.DreamerV3ModelLoss`` because, in TorchRL
0.14.1, that class departs from DreamerV3 in its defaults and cannot host another dynamics:
its default ``kl_mode="balanced"`` is DreamerV2's alpha-balanced KL (alpha 0.8) with free bits
clamped per categorical rather than on the KL summed over the latents; the KL ignores unimix
unless told (``unimix=0.0`` default); images are compared in symlog space by default
(``reco_symlog=True``; DreamerV3 uses plain MSE on pixels) and, in that branch, uint8 targets are
not divided by 255, so the target becomes ``symlog(0..255)`` = 0..5.5 while
``DreamerV3ImageDecoder`` predicts on the ``x/255`` scale (checked: ``symlog(uint8 [0, 128,
255]) = [0, 4.86, 5.55]``); the reward two-hot interpolates in
raw space between symexp-spaced bins (the later DreamerV3 code, not the paper); the continue loss
is off by default (``lambda_continue=0``); and it reads prior/posterior logits only, so a
hierarchical dynamics cannot supply its own KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from imwm.world_model.world_model import WorldModel

__all__ = ["WorldModelLoss"]


class WorldModelLoss(LossModule):
    """DreamerV3 world-model loss over a replay batch ``[B, T]``.

    Args:
        world_model: :class:`~imwm.world_model.WorldModel` (encoder, dynamics, decoder, heads).
        dyn_scale: weight of the dynamics KL term (DreamerV3: 0.5).
        rep_scale: weight of the representation KL term (DreamerV3: 0.1).
        free_bits: KL floor in nats, per step, after summing over latents (DreamerV3: 1.0).
        image_scale, reward_scale, continue_scale: weights of the prediction terms (1.0).
        terminal_weight: weight of a terminal record's continue loss relative to a non-terminal
            one (DreamerV3: 1.0, every record alike). Terminations that a policy rarely causes
            (CartPole's cart leaving the track: a few records in thousands) carry almost no
            gradient at 1.0, so the head keeps predicting "continue" there and imagined rollouts
            run on past them; a larger weight is the usual class-imbalance correction. It biases
            the head towards "terminal" only where the latent state cannot tell the two apart.
        continue_discount: the continue target of a non-terminal record (1.0: the head predicts
            the probability that the episode goes on). DreamerV3's 2024 code (``contdisc: True``
            in danijar/dreamerv3's ``configs.yaml``) trains it towards ``1 - 1/333`` instead, so
            the discount lives inside the prediction and imagination multiplies by the head's
            output alone (:class:`~imwm.agent.DreamerAgent` with ``contdisc=True`` sets this to
            its ``gamma``). The soft target also bounds the logit of non-terminal records, so
            they stop pulling the shared features once fitted.

    Input keys (see :meth:`set_keys`): ``observation``, ``action``, ``is_first``, ``reward``
    ``[B,T,1]``, ``is_terminal`` ``[B,T,1]``; the replay layout of docs/architecture.md.

    Output TensorDict (batch ``[]``):

    - the summable terms, scalars with gradient: ``loss_image``, ``loss_reward``,
      ``loss_continue`` (each times its scale) and ``loss_kl`` (the scaled KL terms); as in
      TorchRL's losses, ``sum(v for k, v in out.items() if k.startswith("loss_"))`` is the
      loss to optimise;
    - scalar metrics (detached): ``world_model_loss`` (that sum), ``kl_mean``, ``entropy_mean``,
      and the batch mean of every other metric of ``dynamics.kl_loss`` under its own name
      (RSSM: ``dyn``, ``rep``);
    - per-sequence signals for replay priorities (detached, ``[B]``): ``model_loss`` (mean over
      T of ``L_t``), ``kl`` (mean over T of the raw KL), ``entropy`` (mean over T of the posterior
      entropy);
    - the world model's outputs (detached): ``posterior``, ``prior`` (``[B,T]`` state
      TensorDicts) and ``feat`` ``[B,T,F]``, so imagination starts from them without a second
      pass.

    Example:
        >>> from imwm.dynamics import RSSMDynamics
        >>> wm = WorldModel.build((4,), 2, lambda e: RSSMDynamics(deter=16, stoch=2, classes=4,
        ...     hidden=16, blocks=2, action_dim=2, embed_dim=e), cnn_depth=4, mlp_units=16,
        ...     mlp_layers=1)
        >>> loss = WorldModelLoss(wm)
        >>> td = TensorDict({"observation": torch.randn(3, 5, 4), "action": torch.zeros(3, 5, 2),
        ...     "is_first": torch.zeros(3, 5, 1, dtype=torch.bool), "reward": torch.zeros(3, 5, 1),
        ...     "is_terminal": torch.zeros(3, 5, 1, dtype=torch.bool)}, [3, 5])
        >>> out = loss(td)
        >>> total = sum(v for k, v in out.items() if k.startswith("loss_"))
        >>> torch.allclose(total, out["world_model_loss"]), out["model_loss"].shape
        (True, torch.Size([3]))
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable input keys.

        Attributes:
            observation: frames uint8 ``[B,T,3,64,64]`` or vectors ``[B,T,D]``.
                Defaults to ``"observation"``.
            action: the action that led to each observation ``[B,T,A]``. Defaults to ``"action"``.
            is_first: first step of an episode ``[B,T,1]``. Defaults to ``"is_first"``.
            reward: reward received on arriving at each observation ``[B,T,1]``.
                Defaults to ``"reward"``.
            is_terminal: the MDP ended at this observation ``[B,T,1]``.
                Defaults to ``"is_terminal"``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        is_first: NestedKey = "is_first"
        reward: NestedKey = "reward"
        is_terminal: NestedKey = "is_terminal"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        world_model: WorldModel,
        *,
        dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
        free_bits: float = 1.0,
        image_scale: float = 1.0,
        reward_scale: float = 1.0,
        continue_scale: float = 1.0,
        terminal_weight: float = 1.0,
        continue_discount: float = 1.0,
    ):
        super().__init__()
        for name, value in (
            ("dyn_scale", dyn_scale),
            ("rep_scale", rep_scale),
            ("free_bits", free_bits),
            ("image_scale", image_scale),
            ("reward_scale", reward_scale),
            ("continue_scale", continue_scale),
            ("terminal_weight", terminal_weight),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 < continue_discount <= 1.0:
            raise ValueError(f"continue_discount must be in (0, 1], got {continue_discount}")
        self.world_model = world_model
        self.dyn_scale = float(dyn_scale)
        self.rep_scale = float(rep_scale)
        self.free_bits = float(free_bits)
        self.image_scale = float(image_scale)
        self.reward_scale = float(reward_scale)
        self.continue_scale = float(continue_scale)
        self.terminal_weight = float(terminal_weight)
        self.continue_discount = float(continue_discount)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # no value estimator

    def _get(self, tensordict: TensorDictBase, name: str) -> torch.Tensor:
        key = getattr(self.tensor_keys, name)
        value = tensordict.get(key, None)
        if value is None:
            raise KeyError(f"WorldModelLoss needs key {key!r} ({name}) in the input TensorDict")
        return value

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        if tensordict.batch_dims != 2:
            raise ValueError(
                "WorldModelLoss expects a [B, T] batch, got batch_size "
                f"{tuple(tensordict.batch_size)}"
            )
        observation = self._get(tensordict, "observation")
        reward = self._get(tensordict, "reward")
        is_terminal = self._get(tensordict, "is_terminal")
        batch, time = tensordict.batch_size
        for name, value in (("reward", reward), ("is_terminal", is_terminal)):
            if tuple(value.shape) != (batch, time, 1):
                raise ValueError(
                    f"{name} must have shape {(batch, time, 1)}, got {tuple(value.shape)}"
                )

        wm = self.world_model
        action, is_first = self._get(tensordict, "action"), self._get(tensordict, "is_first")
        out = wm.observe(observation, action, is_first)
        result = self.heads_and_losses(observation, reward, is_terminal, out["posterior"], out["prior"], out["feat"])
        if getattr(wm.dynamics, "boundary_grad", None) == "local" and wm.dynamics.training and torch.is_grad_enabled():
            surrogate = self._local_boundary_surrogate(
                observation, action, is_first, reward, is_terminal, out["embed"], out["posterior"]
            )
            result["loss_kl"] = result["loss_kl"] + (surrogate - surrogate.detach())  # gradient only
        return result

    def _local_boundary_surrogate(self, observation, action, is_first, reward, is_terminal, embed, posterior):
        """:func:`~imwm.vta.local_gradient.local_boundary_loss` with this loss as the cost.

        A VTA dynamics with ``boundary_grad="local"`` passes no gradient through its READ flags;
        its posterior detector learns instead from the difference in this objective between a READ
        and a COPY at one step per sequence, everything but the boundary's own terms (its KL and
        rate prior) counted: image, reward, continue and the weighted, clipped state KLs.
        """
        from imwm.vta.boundary import READ_INDEX
        from imwm.vta.local_gradient import local_boundary_loss

        wm = self.world_model

        def forced_cost(_, boundary):  # [B]: the objective with the READ flags given
            post, prior = wm.dynamics.observe(embed.detach(), action.float(), is_first, boundary=boundary)
            terms, metrics = self._per_step_terms(observation, reward, is_terminal, post, prior,
                                                  wm.dynamics.get_feat(post))
            return (terms["image"] + terms["reward"] + terms["continue"] + metrics["kl_state"]).sum(1)

        read_prob = torch.softmax(posterior["boundary_logit"], -1)[..., READ_INDEX : READ_INDEX + 1]
        flags = {"boundary": posterior["boundary"], "read_prob": read_prob}
        return local_boundary_loss(forced_cost, observation, flags, cost=lambda cost: cost)

    def _per_step_terms(self, observation, reward, is_terminal, posterior, prior, feat):
        """The scaled ``[B, T]`` terms ``image``, ``reward``, ``continue``, ``kl`` and the KL's metrics."""
        wm = self.world_model
        batch, time = feat.shape[:2]
        image = wm.decoder.loss(wm.decoder(feat), observation)
        reward_loss = wm.reward_head.loss(wm.reward_head(feat), reward)
        terminal = is_terminal.to(feat.dtype)
        continue_loss = wm.continue_head.loss(wm.continue_head(feat), self.continue_discount * (1.0 - terminal))
        if self.terminal_weight != 1.0:
            continue_loss = (1.0 + (self.terminal_weight - 1.0) * terminal.squeeze(-1)) * continue_loss
        kl_loss, metrics = wm.dynamics.kl_loss(
            posterior,
            prior,
            free_bits=self.free_bits,
            dyn_scale=self.dyn_scale,
            rep_scale=self.rep_scale,
        )
        terms = {"image": image, "reward": reward_loss, "continue": continue_loss, "kl": kl_loss}
        for name, value in terms.items():
            if tuple(value.shape) != (batch, time):
                raise ValueError(
                    f"{name} loss must be [B, T] = {(batch, time)}, got {tuple(value.shape)}"
                )
        scales = {"image": self.image_scale, "reward": self.reward_scale, "continue": self.continue_scale, "kl": 1.0}
        return {name: scales[name] * value for name, value in terms.items()}, metrics

    def heads_and_losses(
        self, observation: torch.Tensor, reward: torch.Tensor, is_terminal: torch.Tensor,
        posterior: TensorDictBase, prior: TensorDictBase, feat: torch.Tensor,
    ) -> TensorDict:
        """Everything after the observe loop: decoder, heads, KL and the output TensorDict.

        A function of ``[B, T]`` tensors without a loop, so the per-step compile scopes
        (``agent.compile_scope=step`` or ``observe_step``) compile it whole, beside the loop bodies.
        """
        wm = self.world_model
        terms, metrics = self._per_step_terms(observation, reward, is_terminal, posterior, prior, feat)
        per_step = sum(terms.values())
        result = {f"loss_{name}": value.mean() for name, value in terms.items()}
        with torch.no_grad():
            kl = metrics["kl"].detach()
            entropy = wm.dynamics.entropy(posterior).squeeze(-1)
            result.update({
                "world_model_loss": per_step.mean(),
                "kl_mean": kl.mean(),
                "entropy_mean": entropy.mean(),
                "model_loss": per_step.mean(1),
                "kl": kl.mean(1),
                "entropy": entropy.mean(1),
            })
            for name, value in metrics.items():
                if name != "kl":
                    result[name] = value.detach().float().mean()
        result["posterior"] = posterior.detach()
        result["prior"] = prior.detach()
        result["feat"] = feat.detach()
        return TensorDict(result, batch_size=[])
