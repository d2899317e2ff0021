"""LEXA-style intrinsic reward: decoder uncertainty weighted by a reward-trend detector."""

from __future__ import annotations

import torch
from tensordict.utils import NestedKey

from imwm.intrinsic.base import (
    IntrinsicRewardTransform,
    check_finite_nonnegative,
    check_finite_positive,
    check_unit_interval,
    ema_update,
    masked_mean,
)


class LexaStyleIntrinsicReward(IntrinsicRewardTransform):
    """Visual curiosity from the decoder's predicted std, weighted by an EMA reward-trend detector.

    The image decoder's Normal std on imagined frames is the curiosity signal, and an
    exponential-moving-average trend detector on the reward weights it.
    On vector observations the vector decoder's learned std plays the same role.
    Named after LEXA (Mendonca et al., "Discovering and Achieving Goals via World Models",
    NeurIPS 2021) whose explorer seeks what the model does not know. Note: LEXA's own exploration
    signal is the disagreement of an ensemble of latent predictors (Plan2Explore, Sekar et al.
    2020) -- that is :class:`imwm.intrinsic.DisagreementIntrinsicReward`, not this class.

    Per call, with ``s = ("decoded", "image_std")`` (mean predicted std of each imagined step,
    ``[..., 1]``: over pixels for image observations, over dims of ``vector_std`` for vector
    observations; the key keeps its name either way; the agent fills it when
    ``needs_decoder_std`` is true), ``r`` the extrinsic reward and ``d = decay``; the statistics
    are buffers updated in training mode from detached values before the reward is computed::

        mu_t    = d mu_{t-1}    + (1 - d) mean(r)                  # reward EMA   (mu_1 = mean r)
        sigma_t = d sigma_{t-1} + (1 - d) mean |r - mu_t|          # its spread   (sigma_1 = ...)
        z       = (r - mu_t) / max(sigma_t, min_spread)            # per step: reward trend
        w       = 1 - z;   w <- clip(w, 0, 1) if clip_weights;   w <- sg(w) if stop_grad_weights
        r_int   = visual_scale * w * s;        total = r + r_int

    A step whose predicted reward is above the running average (an upward trend: the agent is
    onto something) gets less curiosity, down to none at one spread above; at or below the
    average it gets the full visual curiosity. ``stop_grad_weights`` keeps the gradient of the
    weight (through ``r``) out of the actor's objective; the gradient through ``s`` is kept.

    ``min_spread`` floors the spread in reward units (as DreamerV3 floors its return scale at 1):
    without it ``z`` is scale-free, so before any reward is found the reward head's noise of
    ~1e-3 alone switched curiosity off on random steps (weight mean 0.65, 20% of steps at 0),
    and a drift of 0.002 in the predicted reward switched it off almost everywhere.

    Non-finite inputs: a step is valid iff both ``r`` and ``s`` are finite there. ``mean`` above
    is over the valid steps only (masked sums, no host sync), so an invalid step moves no
    statistic, and a call without a valid step changes no buffer. An invalid step gets
    ``r_int = 0``.

    Args:
        decay: EMA decay ``d`` in [0, 1).
        visual_scale: coefficient of the visual curiosity (>= 0).
        clip_weights: clip ``w`` to [0, 1].
        stop_grad_weights: detach ``w``.
        min_spread: floor of ``sigma`` in reward units (finite, > 0).
        center, center_decay: subtract a running mean of ``r_int`` (see :class:`IntrinsicRewardTransform`).
        image_std_key: key of ``s``.
        reward_key, intrinsic_key, total_reward_key: see :class:`IntrinsicRewardTransform`.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> t = LexaStyleIntrinsicReward()
        >>> td = TensorDict({"reward": torch.zeros(2, 16, 1),
        ...                  "decoded": {"image_std": torch.rand(2, 16, 1)}}, [2, 16])
        >>> t(td)["intrinsic_reward"].shape
        torch.Size([2, 16, 1])
    """

    needs_decoder_std = True

    def __init__(
        self,
        *,
        decay: float = 0.95,
        visual_scale: float = 1.0,
        clip_weights: bool = True,
        stop_grad_weights: bool = True,
        min_spread: float = 1.0,
        center: bool = False,
        center_decay: float = 0.99,
        image_std_key: NestedKey = ("decoded", "image_std"),
        reward_key: NestedKey = "reward",
        intrinsic_key: NestedKey = "intrinsic_reward",
        total_reward_key: NestedKey = "total_reward",
    ):
        super().__init__(
            reward_key=reward_key,
            intrinsic_key=intrinsic_key,
            total_reward_key=total_reward_key,
            extra_in_keys=[image_std_key],
            center=center,
            center_decay=center_decay,
        )
        self.decay = check_unit_interval("decay", decay, open_high=True)
        self.visual_scale = check_finite_nonnegative("visual_scale", visual_scale)
        self.clip_weights = bool(clip_weights)
        self.stop_grad_weights = bool(stop_grad_weights)
        self.min_spread = check_finite_positive("min_spread", min_spread)
        self.image_std_key = image_std_key
        self.register_buffer("reward_ema", torch.zeros(()))
        self.register_buffer("reward_spread", torch.zeros(()))
        self.register_buffer("last_weight_mean", torch.zeros(()))
        self.register_buffer("last_visual_mean", torch.zeros(()))

    def _intrinsic(self, td, reward, update, prev):
        std = self._get(td, self.image_std_key, "the decoder's predicted std (set needs_decoder_std)")
        if std.shape != reward.shape:
            raise ValueError(
                f"LexaStyleIntrinsicReward: {self.image_std_key!r} must have the reward's shape "
                f"{tuple(reward.shape)} (mean std per frame, [..., 1]), got {tuple(std.shape)}"
            )
        # a step is valid iff both inputs are finite; invalid inputs are replaced by 0 before any
        # arithmetic (never read by a statistic; the base class zeroes their bonus)
        valid = torch.isfinite(reward.detach()) & torch.isfinite(std.detach())
        reward = torch.where(valid, reward, torch.zeros_like(reward))
        std = torch.where(valid, std, torch.zeros_like(std))
        if update:
            rate = 1.0 - self.decay
            mean, ok = masked_mean(reward.detach(), valid)
            ema_update(self.reward_ema, mean, rate, self.initialized, ok)
            spread, _ = masked_mean((reward.detach() - self.reward_ema).abs(), valid)
            ema_update(self.reward_spread, spread, rate, self.initialized, ok)
        trend = (reward - self.reward_ema) / self.reward_spread.clamp_min(self.min_spread)
        weight = 1.0 - trend
        if self.clip_weights:
            weight = weight.clamp(0.0, 1.0)
        if self.stop_grad_weights:
            weight = weight.detach()
        weight_mean, any_valid = masked_mean(weight.detach(), valid)
        self.last_weight_mean.copy_(torch.where(any_valid, weight_mean, self.last_weight_mean))
        visual_mean = masked_mean(std.detach(), valid)[0]
        self.last_visual_mean.copy_(torch.where(any_valid, visual_mean, self.last_visual_mean))
        return self.visual_scale * weight * std, valid

    def metrics(self) -> dict[str, torch.Tensor]:
        out = super().metrics()
        out.update(
            {
                "intrinsic/scale": torch.tensor(self.visual_scale),
                "intrinsic/trend_weight": self.last_weight_mean.clone(),
                "intrinsic/reward_ema": self.reward_ema.clone(),
                "intrinsic/visual": self.last_visual_mean.clone(),
            }
        )
        return out
