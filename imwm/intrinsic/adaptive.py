"""Adaptive intrinsic reward: explore or exploit depending on the reward's acceleration."""

from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from imwm.intrinsic.base import (
    IntrinsicRewardTransform,
    UncertaintyReader,
    check_finite,
    check_finite_nonnegative,
    check_finite_positive,
    check_unit_interval,
    ema_update,
    masked_mean,
)


class AdaptiveIntrinsicReward(IntrinsicRewardTransform):
    """Uncertainty bonus that switches between exploring and exploiting with the reward trend.

    The idea: an explore bonus ``Std(s')`` (the model's uncertainty about the next state), an
    exploit bonus ``1 / (Std(s') + eps)``, a balance between them driven by the acceleration of
    the reward (accelerating reward favours exploitation, stagnation exploration), and a scale
    relative to the extrinsic reward. The exact formulas below are imwm's own.

    Per call, with ``u`` the uncertainty of the (imagined) next state (``dynamics.uncertainty``:
    categorical entropy for the RSSM, mean prior std for VTA) and ``r`` the extrinsic reward,
    both ``[..., 1]``; ``d = trend_decay``; bars are running statistics (buffers), updated once
    per call in training mode from detached values, before the reward is computed::

        m      = mean(r)                                   # one sample of the reward stream
        mu_t   = mu_{t-1} + (1 - d) (m - mu_{t-1})         # EMA of the reward (mu_1 = m)
        v_t    = mu_t - mu_{t-1}                           # first difference  (trend)
        a_t    = v_t - v_{t-1}                             # second difference (acceleration)
        A_t    = EMA_d(a_t),  |A|_t = EMA_d(|a_t|)         # signed and absolute acceleration
        w*     = clip(A_t / (|A|_t + epsilon), 0, 1)       # consistent acceleration -> 1
        w_t    = w_{t-1} + rho (w* - w_{t-1})              # exploit weight ("mix"), w_0 = 0
        U_t    = EMA_d(mean u)                             # the uncertainty's running level (U_0 = 1)
        n      = u / (U_t + epsilon)                       # unit-free uncertainty, ~1 on average
        b      = (1 - w_t) * n + w_t / (n + epsilon)       # explore bonus / exploit bonus
        R_t    = EMA_d(mean |r|),  B_t = EMA_d(mean |b|)
        beta*  = min(beta_max, max(R_t, reward_floor) / (B_t + epsilon))
        beta_t = beta_{t-1} + rho (beta* - beta_{t-1})     # beta_1 = beta*, beta_0 = beta_max
        r_int  = clip(beta_t * b, clip_min, clip_max);     total = r + r_int
        (with ``center``: r_int <- r_int - running mean, see IntrinsicRewardTransform)

    Why ``n`` and not ``u``: the slope of ``(1 - w) u + w / u`` in ``u`` turns negative only for
    ``w > u^2 / (1 + u^2)``; with the RSSM's entropy (``u`` ~5 at 4x4 latents, ~55 at 32x32) the
    "exploit" mode would still pay for uncertain states until ``w`` > 0.96 (resp. 0.9997). On the
    unit-free ``n`` the switch happens at ``w = 1/2`` for either dynamics, whatever their units.

    So: an accelerating reward stream (``A`` consistently > 0) moves the weight to exploitation
    (prefer states the model is sure about), a flat, noisy or decelerating one back to
    exploration (prefer uncertain states). ``A / |A|`` is a signal-to-noise ratio: noise in a
    flat stream averages out in ``A`` but not in ``|A|``. The EMA lags a ramp, so its velocity
    keeps growing towards the ramp's slope: a steadily rising reward reads as accelerating and
    also shifts to exploitation (rising reward favours exploitation, by design),
    while a saturating one (EMA velocity shrinking) shifts back to exploration. The scale keeps the mean intrinsic
    magnitude at most that of the extrinsic reward, floored at ``reward_floor`` (as DreamerV3's
    return normaliser floors its scale at 1) so that a sparse task with no reward yet still
    gets a bonus, and the coefficient never exceeds ``beta_max``.

    Gradients: statistics are detached; ``r_int`` keeps the gradient of ``u`` (useful for an
    actor trained by dynamics backpropagation; a REINFORCE actor ignores it).

    Non-finite inputs: a step is valid iff both ``u`` and ``r`` are finite there. Every ``mean``
    above is over the valid steps only (masked sums, no host sync), so an invalid step moves no
    statistic; a call without a valid step changes no buffer (``num_updates`` included, so the
    first *valid* call still initialises the EMAs). An invalid step gets ``r_int = 0``.

    Args:
        beta_max: cap on the coefficient ``beta`` (finite, >= 0).
        rho: adaptation rate of ``beta`` and of the mix, in [0, 1].
        epsilon: numerical floor (finite, > 0).
        clip_min, clip_max: clipping range of ``r_int`` (finite, ``clip_min <= clip_max``).
        trend_decay: EMA decay ``d`` of the reward statistics, in [0, 1).
        reward_floor: floor of the extrinsic magnitude in the scale (>= 0).
        center, center_decay: subtract a running mean of ``r_int`` (see :class:`IntrinsicRewardTransform`).
        uncertainty_key: key of ``u`` (default ``"uncertainty"``, as in the imagined trajectory).
        uncertainty_fn: optional ``state TensorDict -> [..., 1]`` used when ``uncertainty_key``
            is absent (e.g. ``dynamics.uncertainty`` inside a TorchRL model-based env).
        state_key: state read by ``uncertainty_fn``.
        reward_key, intrinsic_key, total_reward_key: see :class:`IntrinsicRewardTransform`.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> t = AdaptiveIntrinsicReward()
        >>> td = TensorDict({"reward": torch.zeros(4, 16, 1), "uncertainty": torch.rand(4, 16, 1)}, [4, 16])
        >>> t(td)["total_reward"].shape
        torch.Size([4, 16, 1])
    """

    def __init__(
        self,
        *,
        beta_max: float = 0.1,
        rho: float = 0.1,
        epsilon: float = 1e-6,
        clip_min: float = -10.0,
        clip_max: float = 10.0,
        trend_decay: float = 0.9,
        reward_floor: float = 1.0,
        center: bool = False,
        center_decay: float = 0.99,
        uncertainty_key: NestedKey = "uncertainty",
        uncertainty_fn: Callable[[TensorDictBase], torch.Tensor] | None = None,
        state_key: NestedKey = "state",
        reward_key: NestedKey = "reward",
        intrinsic_key: NestedKey = "intrinsic_reward",
        total_reward_key: NestedKey = "total_reward",
    ):
        super().__init__(
            reward_key=reward_key,
            intrinsic_key=intrinsic_key,
            total_reward_key=total_reward_key,
            extra_in_keys=[uncertainty_key],
            center=center,
            center_decay=center_decay,
        )
        self.beta_max = check_finite_nonnegative("beta_max", beta_max)
        self.rho = check_unit_interval("rho", rho)
        self.epsilon = check_finite_positive("epsilon", epsilon)
        self.clip_min, self.clip_max = check_finite("clip_min", clip_min), check_finite("clip_max", clip_max)
        if self.clip_min > self.clip_max:
            raise ValueError(f"clip_min must be <= clip_max, got clip_min={clip_min}, clip_max={clip_max}")
        self.trend_decay = check_unit_interval("trend_decay", trend_decay, open_high=True)
        self.reward_floor = check_finite_nonnegative("reward_floor", reward_floor)
        self._uncertainty = UncertaintyReader(uncertainty_key, uncertainty_fn, state_key)
        for name in ("reward_ema", "velocity", "accel_ema", "accel_abs_ema", "mix", "reward_abs_ema", "bonus_abs_ema",
                     "uncertainty_ema"):
            self.register_buffer(name, torch.zeros(()))
        self.uncertainty_ema.fill_(1.0)  # n = u until the first training call sets the level
        self.register_buffer("scale", torch.tensor(self.beta_max))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _update_trend(self, reward: torch.Tensor, valid: torch.Tensor) -> None:
        """``reward``: detached, finite where ``valid`` (the rest is not read)."""
        rate = 1.0 - self.trend_decay
        first = self.num_updates == 0
        m, ok = masked_mean(reward, valid)
        m = m.to(self.reward_ema.dtype)
        new_ema = torch.where(first, m, self.reward_ema + rate * (m - self.reward_ema))
        new_velocity = torch.where(first, torch.zeros_like(m), new_ema - self.reward_ema)
        accel = new_velocity - self.velocity
        has_accel = (self.num_updates >= 2) & ok  # a second difference needs three samples
        seen_accel = self.num_updates >= 3  # ... and the EMAs of it start from their first value
        accel_ema = torch.where(seen_accel, self.accel_ema + rate * (accel - self.accel_ema), accel)
        accel_abs_ema = torch.where(
            seen_accel, self.accel_abs_ema + rate * (accel.abs() - self.accel_abs_ema), accel.abs()
        )
        self.accel_ema.copy_(torch.where(has_accel, accel_ema, self.accel_ema))
        self.accel_abs_ema.copy_(torch.where(has_accel, accel_abs_ema, self.accel_abs_ema))
        self.reward_ema.copy_(torch.where(ok, new_ema, self.reward_ema))
        self.velocity.copy_(torch.where(ok, new_velocity, self.velocity))
        target = (self.accel_ema / (self.accel_abs_ema + self.epsilon)).clamp(0.0, 1.0)
        self.mix.copy_(torch.where(ok, self.mix + self.rho * (target - self.mix), self.mix))
        ema_update(self.reward_abs_ema, masked_mean(reward.abs(), valid)[0], rate, ~first, ok)

    def _intrinsic(self, td, reward, update, prev):
        u = self._uncertainty(self, td, reward)
        # a step is valid iff both inputs are finite; invalid inputs are replaced before any
        # arithmetic (their value is never read by a statistic, and their bonus is zeroed)
        valid = torch.isfinite(u.detach()) & torch.isfinite(reward.detach())
        u = torch.where(valid, u, torch.ones_like(u))
        rate = 1.0 - self.trend_decay
        if update:
            u_mean, ok = masked_mean(u.detach(), valid)
            ema_update(self.uncertainty_ema, u_mean, rate, self.num_updates > 0, ok)
            self._update_trend(torch.where(valid, reward.detach(), torch.zeros_like(reward)), valid)
        n = u / (self.uncertainty_ema + self.epsilon)
        w = self.mix
        bonus = (1.0 - w) * n + w / (n + self.epsilon)
        valid = valid & torch.isfinite(bonus.detach())  # e.g. a level U ~ -epsilon
        if update:
            first = self.num_updates == 0
            b_abs, ok_bonus = masked_mean(bonus.detach().abs(), valid)
            ema_update(self.bonus_abs_ema, b_abs, rate, ~first, ok_bonus)
            target = torch.clamp(
                self.reward_abs_ema.clamp_min(self.reward_floor) / (self.bonus_abs_ema + self.epsilon),
                max=self.beta_max,
            )
            new_scale = torch.where(first, target, self.scale + self.rho * (target - self.scale))
            self.scale.copy_(torch.where(ok, new_scale, self.scale))
            self.num_updates.add_(ok.to(self.num_updates.dtype))
        bonus = torch.where(valid, bonus, torch.zeros_like(bonus))
        return (self.scale * bonus).clamp(self.clip_min, self.clip_max), valid

    def metrics(self) -> dict[str, torch.Tensor]:
        out = super().metrics()
        out.update(
            {
                "intrinsic/scale": self.scale.clone(),
                "intrinsic/mix": self.mix.clone(),
                "intrinsic/reward_ema": self.reward_ema.clone(),
                "intrinsic/accel": self.accel_ema.clone(),
                "intrinsic/uncertainty": self.uncertainty_ema.clone(),
            }
        )
        return out
