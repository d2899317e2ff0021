"""``VTADynamics``: DreamerV3-integrated Variational Temporal Abstraction behind the Dynamics protocol.

Kim, Ahn & Bengio, "Variational Temporal Abstraction", NeurIPS 2019; integrated with DreamerV3
(Hafner et al. 2023): the world model owns encoder and decoder, VTA takes ``embed`` and exposes
``kl_loss``.

Per step ``t`` (``m_t`` READ means a segment starts at ``t``; ``a`` is the action that led to ``t``)::

    m_t        ~ q(m | conv1d(embed)_t)  regularised by (seg_len, seg_num)      [posterior]
               ~ p(m | feat_{t-1}, a)     regularised likewise                  [prior]
    abstract   h^z_t = READ ? GRU_z([z_{t-1}, a], h^z_{t-1}) : h^z_{t-1}
               z_t   = READ ? sample q(z | h^z_t, embed_t) : z_{t-1}            (prior p(z | h^z_t))
    observation  h^s_t = GRU_s([C * s_{t-1}, a, h^z_t, z_t], C * h^s_{t-1})   (C = COPY: reset at READ;
                                                                            C = 1 with obs_reset=False)
               s_t   ~ q(s | h^s_t, embed_t)                                   (prior p(s | h^s_t))
    seg_len_t = READ ? 1 : seg_len_{t-1} + 1,   seg_num_t = seg_num_{t-1} + READ

The posterior boundary logits of a whole sequence come from one 1-D conv pass over ``embed``
(no per-step work). The time loop holds the two GRU cells, the two posterior heads (each called
on ``cat(belief, embed_t)``), the elementwise boundary regularisation and sample; the priors and
the prior boundary are batched over ``[B, T]`` after it. The loop is written plainly and
``agent.compile`` fuses it. Boundaries are Gumbel straight-through samples in ``train()`` (no
gradient with ``boundary_grad="local"``) and the mode in ``eval()``. A state with
``seg_num == 0`` (fresh ``initial()`` or ``is_first``) is always READ.

``obs_step`` (acting online) cannot see the next frame that the k=3 conv reads, so online the
boundary comes from the *prior* boundary detector (``p(m | feat_{t-1}, a)``, trained by the
boundary KL to predict the posterior), regularised the same way; the state posterior still
reads ``embed_t``. This is causal and matches what ``img_step`` does in imagination.

State keys: ``abs_belief, abs_stoch, abs_mean, abs_std, obs_belief,
obs_stoch, obs_mean, obs_std, boundary`` (``[.., 1]``, 1.0 = READ, straight-through gradient unless local),
``boundary_logit`` (``[.., 2]`` READ/COPY, regularised), ``seg_len, seg_num`` (``[.., 1]``).
``get_feat = cat(abs_belief, abs_stoch, obs_belief, obs_stoch)``.

GRUs are ``nn.GRUCell`` (fused kernels; DreamerV3's LayerNorm block GRU is the RSSM's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict
from torch import Tensor, nn
from torch.nn import functional as F

from imwm.errors import check_bool, check_integer
from imwm.vta.boundary import READ_INDEX, boundary_push, rate_prior_kl, regularize_boundary
from imwm.vta.layers import (LatentDistribution, PostBoundaryDetector, PriorBoundaryDetector, gaussian_kl,
                             gaussian_kl_parts)
from imwm.vta.local_gradient import check_boundary_grad
from imwm.vta.options import BoundaryOptions
from imwm.vta.surprise_skip import SurpriseSkip, rename_legacy_keys

__all__ = ["VTADynamics", "VTA_STATE_KEYS"]

VTA_STATE_KEYS = (
    "abs_belief", "abs_stoch", "abs_mean", "abs_std",
    "obs_belief", "obs_stoch", "obs_mean", "obs_std",
    "boundary", "boundary_logit", "seg_len", "seg_num",
)
#: ``boundary_surprise_measure`` values: the whole KL, or its mean term alone
SURPRISE_MEASURES = ("kl", "shift")
_FORCED_READ_LOGIT = 10.0  # logits stored where READ is forced (first step): both KLs vanish there


def _cat_kl(lq: Tensor, lp: Tensor) -> Tensor:
    lq, lp = torch.log_softmax(lq, -1), torch.log_softmax(lp, -1)
    return (lq.exp() * (lq - lp)).sum(-1)


class VTADynamics(BoundaryOptions):
    """Hierarchical (abstract + observation level) dynamics with learned boundaries.

    Args (match ``configs/dynamics/vta.yaml`` and ``configs/vta/dreamer.yaml`` one to one):
        action_dim, embed_dim: widths of actions and observation embeddings.
        abs_belief_dim, obs_belief_dim: GRU sizes of the two levels (default 512).
        abs_stoch_dim, obs_stoch_dim: Gaussian latent sizes (default 32).
        hidden: width of the latent heads and prior boundary MLP.
        min_std: floor of every latent std (softplus + min_std).
        boundary_hidden, boundary_layers: channels and k=3 conv blocks of the posterior boundary detector.
        boundary_diff: the detector also reads ``embed_t - embed_{t-1}``
            (:class:`~imwm.vta.layers.PostBoundaryDetector`).
        boundary_causal: the detector sees only ``embed[: t + 1]`` for step ``t`` instead of a window
            centred on ``t``, so its READ probability at ``t`` does not depend on frames after ``t``.
        boundary_pixel_view: width of extra detector inputs the owner passes to :meth:`observe` as
            ``pixel_view`` ``[B, T, boundary_pixel_view]`` (its
            :class:`~imwm.vta.frame_change.FrameChangeEncoder` features); the detector reads
            ``cat(embed, pixel_view)``. 0 (default): the detector reads ``embed`` only.
        boundary_surprise: the detector also reads, per step, how surprising the frame is to the
            observation level when no segment starts: ``log(1 + KL(q(s_t) || p(s_t)))`` from a
            gradient-free pass of the same sequence with every step COPY (except the forced
            first READ). A change of appearance or of motion is a step whose frame the running
            segment did not predict (event segmentation by prediction error, Zacks et al. 2007),
            which neither the embedding nor the frame difference shows directly. Costs one
            more (forward-only) unroll of the sequence per :meth:`observe`.
        boundary_surprise_measure: which part of that KL the surprise is: ``"kl"`` (default) the
            whole KL; ``"shift"`` only its mean term ``0.5 * sum ((mu_q - mu_p) / sigma_p)^2``
            (:func:`~imwm.vta.layers.gaussian_kl_parts`), leaving out how the posterior's width
            differs from the prior's, which does not mark the changes: on trained ``vta=surprise``
            models that width part ranked the true changes below chance (AUC 0.45-0.48), and the
            READs at the most surprising steps found more changes by the mean term alone than by the
            whole KL. A detector trained on ``"shift"`` fired more often and did not do better (3
            seeds: ``dynamics`` F1 0.533 against 0.559, ``appearance`` 0.514 against 0.494;
            RESULTS.md, "VTA: which part of the surprise marks the changes"), so ``"kl"`` stays.
        boundary_surprise_skip: with ``boundary_surprise``, the READ log-odds also get
            ``g * norm(surprise_t)`` directly, beside the detector's own reading of it: ``norm`` a
            batch norm without affine terms over the steps ``t >= 1``, ``g`` one learned gain that
            starts at 0. A single weight gathers the boundary gradient of every step, where the
            detector's first layer spreads it over all its inputs; its sign says whether the
            objective pays for READs where the segment's prediction fails
            (:class:`~imwm.vta.surprise_skip.SurpriseSkip`, the attribute ``surprise_skip``).
        boundary_conv: ``False`` (with ``boundary_surprise_skip``): no convolutional detector; the
            READ log-odds are ``g * norm(surprise_t) + b``, two learned numbers (``b`` also from 0):
            a segment starts where the running segment's prediction fails by more than a learned
            threshold. Two weights learn from the boundary gradient with little noise where a
            detector over the embeddings can learn to fire on whatever else the noisy cost
            differences reward. With ``obs_kl_scale=10`` it ranks the turns of the ``dynamics``
            videos at AUC 0.80-0.81 after 3,000 updates on 3 of 3 seeds, where the conv detector
            with the skip reached 0.64-0.71; with ``boundary_surprise_window=2`` 0.81-0.83 (RESULTS.md).
        boundary_surprise_window: with ``boundary_surprise_skip``, how many steps of surprise the
            skip reads: ``sum_k g_k * norm(surprise_{t-k})`` for ``k < window`` (``g_0`` is the gain
            above, the others learned from 0; a step before an episode start counts as 0). The
            surprise of a pass without READs stays high for a step after a change, since the running
            segment takes in the new frame gradually, and one gain on ``surprise_t`` fires there
            too; a negative ``g_1`` lets the skip fire on the rise of the surprise instead.
            1 (default): ``surprise_t`` alone.
        boundary_surprise_abstract: with ``boundary_surprise_skip``, the READ log-odds also get
            ``g_a * norm(step_t)``, where ``step_t = log(1 + KL(q(z | h, e_t) || q(z | h, e_{t-1})))``
            is how far the abstract posterior would move between the two frames, read in the same
            gradient-free pass (``h`` the segment's abstract belief there, held fixed; 0 at the first
            step and at an episode start); ``g_a`` is learned from 0 with its own batch norm. The
            observation level's surprise shows a change of motion; a change of a property that the
            segment holds (an object's colour) shows in what ``z`` would read, not in a step-to-step
            prediction (on ``appearance`` the abstract step ranked the colour changes at AUC
            0.61-0.78 where the observation KL ranked them at 0.58-0.71, RESULTS.md). The conv
            detector, where there is one, reads it as an extra input channel. False (default): off.
        boundary_norm: ``"layer"`` or ``"batch"``, the normalisation of the detector's blocks
            (:class:`~imwm.vta.layers.PostBoundaryDetector`; batch norm removes the per-channel
            offsets that left layer-normed detectors nearly constant).
        segment_posterior: the abstract posterior reads a backward GRU summary of its whole segment
            (``embed_t .. embed_end``, restarted at every READ), as the original VTA's does, instead
            of ``embed_t`` alone. Only a READ at a change then lets ``z`` describe the segment ahead,
            which is what makes a READ there worth more than elsewhere. Online (:meth:`obs_step`)
            the segment seen so far is the current frame, so the summary reads ``embed_t`` alone.
        obs_reset: ``True`` (VTA): a READ restarts the observation level (its belief and latent
            zeroed), so whatever persists across the boundary (an object's position, its colour)
            has to be encoded again through ``z``; a READ then pays only where most of the state
            changes at once (a scene cut, a new object). ``False``: the observation level runs on
            across READs and reads the new ``z``; a READ replaces only the segment's abstract
            latent, so it can pay where one attribute changes and the rest persists (a colour,
            a direction).
        obs_kl_scale: multiplies the observation latent's KL terms (``s``) in :meth:`kl_loss`, against
            1 for the abstract latent's (``z``). Above 1, information costs more in ``s`` than in
            ``z``: what persists through a segment (a colour, a direction of motion) is cheaper
            carried by ``z`` and renewed by a READ where it changes than corrected step by step
            in ``s`` after a COPY.
        boundary_grad: ``"straight_through"``: the cost's gradient reaches the posterior detector
            through the sampled READ flags. ``"local"``: the flags carry no gradient into the
            states; the owner of the whole cost adds
            :func:`~imwm.vta.local_gradient.local_boundary_loss` (:class:`~imwm.vta.sequence_model.VTASequenceModel`
            does, and so does :class:`~imwm.objectives.WorldModelLoss` inside the agent, with the
            whole world-model objective as the cost; there the update runs eagerly). The cost difference is
            the exact derivative only with ``boundary_force_scale=0``: forcing makes a step's
            posterior depend on the flags before it, which the flip holds fixed.
        min_seg_len: no READ, posterior or prior, while the running segment is shorter than this
            many steps (the step is COPY and both detectors' logits there are fixed, so neither
            boundary KL nor the detector's gradient counts it). A detector that reads how surprised
            the running segment is fires on the step after a change as well, when the new frame
            still surprises it; 2 keeps those READs off. 1 (default): no constraint.
        **boundary options**: ``max_seg_len``, ``max_seg_num``, ``boundary_temp``, ``boundary_temp_min``,
            ``boundary_temp_anneal_rate``, ``boundary_force_scale``, ``boundary_force_schedule``,
            ``boundary_force_start``, ``boundary_force_decay_updates``, ``boundary_rate``,
            ``boundary_scale`` (:mod:`imwm.vta.options`). Call :meth:`set_progress` with the update
            counter so the schedules advance.

    Example:
        >>> vta = VTADynamics(action_dim=2, embed_dim=8, abs_belief_dim=16, obs_belief_dim=16,
        ...                   abs_stoch_dim=4, obs_stoch_dim=4, hidden=16, boundary_hidden=8)
        >>> post, prior = vta.observe(torch.randn(3, 5, 8), torch.zeros(3, 5, 2),
        ...                           torch.zeros(3, 5, 1, dtype=torch.bool))
        >>> post.batch_size, vta.get_feat(post).shape
        (torch.Size([3, 5]), torch.Size([3, 5, 40]))
        >>> loss, metrics = vta.kl_loss(post, prior, free_bits=1.0, dyn_scale=0.5, rep_scale=0.1)
        >>> loss.shape, metrics["kl"].shape
        (torch.Size([3, 5]), torch.Size([3, 5]))
    """

    def __init__(
        self,
        *,
        action_dim: int,
        embed_dim: int,
        abs_belief_dim: int = 512,
        obs_belief_dim: int = 512,
        abs_stoch_dim: int = 32,
        obs_stoch_dim: int = 32,
        hidden: int = 512,
        min_std: float = 0.1,
        boundary_hidden: int = 256,
        boundary_layers: int = 2,
        boundary_diff: bool = False,
        boundary_causal: bool = False,
        boundary_pixel_view: int = 0,
        boundary_surprise: bool = False,
        boundary_surprise_measure: str = "kl",
        boundary_surprise_skip: bool = False,
        boundary_surprise_window: int = 1,
        boundary_surprise_abstract: bool = False,
        boundary_conv: bool = True,
        boundary_norm: str = "layer",
        segment_posterior: bool = False,
        obs_reset: bool = True,
        obs_kl_scale: float = 1.0,
        boundary_grad: str = "straight_through",
        min_seg_len: int = 1,
        **boundary_options,
    ):
        super().__init__()
        self.boundary_grad = check_boundary_grad(boundary_grad)
        self.segment_posterior = check_bool("segment_posterior", segment_posterior)
        self.obs_reset = check_bool("obs_reset", obs_reset)
        if isinstance(obs_kl_scale, bool) or not isinstance(obs_kl_scale, (int, float)) or not obs_kl_scale > 0:
            raise ValueError(f"obs_kl_scale must be a number > 0, got {obs_kl_scale!r}")
        self.obs_kl_scale = float(obs_kl_scale)
        self.action_dim = check_integer("action_dim", action_dim)
        self.embed_dim = check_integer("embed_dim", embed_dim)
        self.abs_belief_dim = check_integer("abs_belief_dim", abs_belief_dim)
        self.obs_belief_dim = check_integer("obs_belief_dim", obs_belief_dim)
        self.abs_stoch_dim = check_integer("abs_stoch_dim", abs_stoch_dim)
        self.obs_stoch_dim = check_integer("obs_stoch_dim", obs_stoch_dim)
        self.hidden = check_integer("hidden", hidden)
        if not min_std > 0:
            raise ValueError(f"min_std must be > 0, got {min_std!r}")
        self._init_boundary_options(**boundary_options)
        self.min_std = float(min_std)
        self.min_seg_len = check_integer("min_seg_len", min_seg_len)
        self.feat_dim = abs_belief_dim + abs_stoch_dim + obs_belief_dim + obs_stoch_dim
        ld = dict(hidden_dim=hidden, flavour="dreamer", min_std=min_std)

        self.register_buffer(
            "_forced_logits", torch.tensor([_FORCED_READ_LOGIT, -_FORCED_READ_LOGIT]), persistent=False
        )
        self.register_buffer("_blocked_logits", -self._forced_logits, persistent=False)  # COPY, fixed
        # (temperature, force scale) of the current update as a tensor: a compiled step reads them
        # from here, so a schedule that changes them every update does not retrace the graph
        self.register_buffer("_schedule", torch.tensor([self.current_temp, self.current_force_scale]),
                             persistent=False)
        self.boundary_pixel_view = check_integer("boundary_pixel_view", boundary_pixel_view, 0)
        self.boundary_surprise = check_bool("boundary_surprise", boundary_surprise)
        if boundary_surprise_measure not in SURPRISE_MEASURES:
            raise ValueError(f"boundary_surprise_measure must be one of {SURPRISE_MEASURES}, "
                             f"got {boundary_surprise_measure!r}")
        self.boundary_surprise_measure = boundary_surprise_measure
        self.boundary_surprise_skip = check_bool("boundary_surprise_skip", boundary_surprise_skip)
        if self.boundary_surprise_skip and not self.boundary_surprise:
            raise ValueError("boundary_surprise_skip=True needs boundary_surprise=True (the skip reads that surprise)")
        self.boundary_surprise_window = check_integer("boundary_surprise_window", boundary_surprise_window)
        if self.boundary_surprise_window > 1 and not self.boundary_surprise_skip:
            raise ValueError("boundary_surprise_window > 1 needs boundary_surprise_skip=True (the window is the skip's)")
        self.boundary_surprise_abstract = check_bool("boundary_surprise_abstract", boundary_surprise_abstract)
        if self.boundary_surprise_abstract and not self.boundary_surprise_skip:
            raise ValueError("boundary_surprise_abstract=True needs boundary_surprise_skip=True (the skip reads it)")
        self.boundary_conv = check_bool("boundary_conv", boundary_conv)
        if not self.boundary_conv and not self.boundary_surprise_skip:
            raise ValueError("boundary_conv=False needs boundary_surprise_skip=True (the skip is then the detector)")
        self.surprise_skip = None if not self.boundary_surprise_skip else SurpriseSkip(
            window=self.boundary_surprise_window, abstract=self.boundary_surprise_abstract,
            threshold=not self.boundary_conv)
        if self.surprise_skip is not None:
            self.register_buffer("_read_column", torch.eye(2)[READ_INDEX], persistent=False)
            self.register_load_state_dict_pre_hook(rename_legacy_keys)
        self.post_boundary = None if not self.boundary_conv else PostBoundaryDetector(
            embed_dim + boundary_pixel_view + int(boundary_surprise) + int(self.boundary_surprise_abstract),
            hidden_dim=check_integer("boundary_hidden", boundary_hidden),
            num_layers=check_integer("boundary_layers", boundary_layers), flavour="dreamer", diff=boundary_diff,
            causal=boundary_causal, norm=boundary_norm,
        )
        self.prior_boundary = PriorBoundaryDetector(self.feat_dim + action_dim, hidden_dim=hidden, flavour="dreamer")
        self.abs_gru = nn.GRUCell(abs_stoch_dim + action_dim, abs_belief_dim)
        self.prior_abs = LatentDistribution(abs_belief_dim, abs_stoch_dim, **ld)
        self.post_abs = LatentDistribution(abs_belief_dim + embed_dim, abs_stoch_dim, **ld)
        # backward summary of a segment for the abstract posterior (same width as embed)
        self.segment_gru = nn.GRUCell(embed_dim, embed_dim) if segment_posterior else None
        self.obs_gru = nn.GRUCell(obs_stoch_dim + action_dim + abs_belief_dim + abs_stoch_dim, obs_belief_dim)
        self.prior_obs = LatentDistribution(obs_belief_dim, obs_stoch_dim, **ld)
        self.post_obs = LatentDistribution(obs_belief_dim + embed_dim, obs_stoch_dim, **ld)

    # ------------------------------------------------------------------ helpers
    def _check(self, name: str, value: Tensor, shape: Sequence[int]) -> None:
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")

    def set_progress(self, update: int) -> None:
        super().set_progress(update)
        self._schedule.copy_(torch.tensor([self.current_temp, self.current_force_scale]))

    def _sample_boundary(self, logits: Tensor, limits: tuple[Tensor, Tensor | None],
                         noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """Straight-through READ flag ``[.., 1]`` and the stored logits, within ``limits`` (:meth:`_limits`)."""
        temp = self._schedule[0] if torch.compiler.is_compiling() else self.current_temp
        if noise is None:  # eval: the mode
            soft = torch.softmax(logits / temp, -1)
        else:
            soft = torch.softmax((logits + noise) / temp, -1)
        hard = (soft[..., :1] >= soft[..., 1:]).to(soft.dtype)
        read = hard + (soft[..., :1] - soft[..., :1].detach())  # exactly 0/1 forward
        forced, blocked = limits
        logits = torch.where(forced, self._forced_logits.to(logits.dtype), logits)
        if blocked is not None:
            logits = torch.where(blocked, self._blocked_logits.to(logits.dtype), logits)
        return self._within_limits(read, limits), logits

    def _limits(self, seg_len: Tensor, seg_num: Tensor) -> tuple[Tensor, Tensor | None]:
        """Where READ is forced (no segment yet) and where it is blocked (a running segment shorter than
        ``min_seg_len``; None without that limit)."""
        forced = seg_num < 0.5
        if self.min_seg_len == 1:
            return forced, None
        return forced, ~forced & (seg_len < self.min_seg_len)

    @staticmethod
    def _within_limits(read: Tensor, limits: tuple[Tensor, Tensor | None]) -> Tensor:
        """READ flags with the forced steps READ and the blocked steps COPY."""
        forced, blocked = limits
        read = torch.where(forced, 1.0, read)
        return read if blocked is None else torch.where(blocked, 0.0, read)

    def _gumbel(self, shape, ref: Tensor) -> Tensor | None:
        if not self.training:
            return None
        u = torch.empty(*shape, device=ref.device, dtype=ref.dtype).uniform_(1e-4, 1 - 1e-4)
        return -torch.log(-torch.log(u))

    def _regularize(self, logits: Tensor, seg_len: Tensor, seg_num: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            push = boundary_push(logits, seg_len, seg_num, self.max_seg_len, self.max_seg_num)
            return logits + push * self._schedule[1].to(logits.dtype)
        return regularize_boundary(logits, seg_len, seg_num, self.max_seg_len, self.max_seg_num, self.current_force_scale)

    @staticmethod
    def _reset(prev: dict, keep: Tensor) -> dict:
        """``initial()`` where ``keep == 0`` (zeros, unit stds), ``prev`` elsewhere."""
        out = {key: v * keep for key, v in prev.items()}
        out["abs_std"] = out["abs_std"] + (1.0 - keep)
        out["obs_std"] = out["obs_std"] + (1.0 - keep)
        return out

    def _state(self, batch_size, **values) -> TensorDict:
        return TensorDict(values, batch_size=batch_size)

    # ------------------------------------------------------------------ protocol
    def initial(self, batch_size: int | Sequence[int]) -> TensorDict:
        """Zero beliefs and latents, unit std, ``seg_num = 0`` (so the next step is READ)."""
        shape = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        w = self.abs_gru.weight_hh
        z = lambda n: torch.zeros(*shape, n, device=w.device, dtype=w.dtype)  # noqa: E731
        o = lambda n: torch.ones(*shape, n, device=w.device, dtype=w.dtype)  # noqa: E731
        return self._state(
            shape,
            abs_belief=z(self.abs_belief_dim), abs_stoch=z(self.abs_stoch_dim),
            abs_mean=z(self.abs_stoch_dim), abs_std=o(self.abs_stoch_dim),
            obs_belief=z(self.obs_belief_dim), obs_stoch=z(self.obs_stoch_dim),
            obs_mean=z(self.obs_stoch_dim), obs_std=o(self.obs_stoch_dim),
            boundary=z(1), boundary_logit=z(2), seg_len=z(1), seg_num=z(1),
        )

    #: the parts of :meth:`get_feat`, in order; the observation latent comes last, so that
    #: :meth:`copy_latents`' ``context`` (all but it) plus either latent is a feature
    FEAT_KEYS = ("abs_belief", "abs_stoch", "obs_belief", "obs_stoch")

    def get_feat(self, state: TensorDict) -> Tensor:
        return torch.cat([state[k] for k in self.FEAT_KEYS], -1)

    @staticmethod
    def _advance_segment(seg_len: Tensor, seg_num: Tensor, read: Tensor) -> tuple[Tensor, Tensor]:
        hard = read.detach() > 0.5  # counters use the exact flag (hard + soft - soft is only ~1)
        return torch.where(hard, 1.0, seg_len + 1.0), seg_num + hard.to(read.dtype)

    def _step(self, prev: dict, a: Tensor, read: Tensor, embed: Tensor | None,
              abs_noise: Tensor, obs_noise: Tensor, abs_embed: Tensor | None = None) -> dict:
        """Transition given the boundary; posterior heads when ``embed`` is given, else priors.

        ``abs_embed`` (default ``embed``) is what the abstract posterior reads.
        """
        copy = 1.0 - read
        carry = copy if self.obs_reset else 1.0  # what of the observation level survives the step
        abs_belief = self.abs_gru(torch.cat([prev["abs_stoch"], a], -1), prev["abs_belief"])
        abs_belief = read * abs_belief + copy * prev["abs_belief"]
        if embed is None:
            mean, std = self.prior_abs.mean_std(abs_belief)
        else:
            mean, std = self.post_abs.mean_std(torch.cat([abs_belief, embed if abs_embed is None else abs_embed], -1))
        abs_mean = read * mean + copy * prev["abs_mean"]
        abs_std = read * std + copy * prev["abs_std"]
        abs_stoch = read * (mean + std * abs_noise) + copy * prev["abs_stoch"]
        obs_in = torch.cat([carry * prev["obs_stoch"], a, abs_belief, abs_stoch], -1)
        obs_belief = self.obs_gru(obs_in, carry * prev["obs_belief"])
        if embed is None:
            obs_mean, obs_std = self.prior_obs.mean_std(obs_belief)
        else:
            obs_mean, obs_std = self.post_obs.mean_std(torch.cat([obs_belief, embed], -1))
        seg_len, seg_num = self._advance_segment(prev["seg_len"], prev["seg_num"], read)
        return dict(
            abs_belief=abs_belief, abs_stoch=abs_stoch, abs_mean=abs_mean, abs_std=abs_std,
            obs_belief=obs_belief, obs_stoch=obs_mean + obs_std * obs_noise, obs_mean=obs_mean, obs_std=obs_std,
            seg_len=seg_len, seg_num=seg_num,
        )

    def _detector_input(self, embed: Tensor, pixel_view: Tensor | None, surprise: Tensor | None) -> Tensor:
        parts = [embed] if surprise is None else [embed, surprise]
        if self.boundary_pixel_view == 0:
            if pixel_view is not None:
                raise ValueError("pixel_view was given but boundary_pixel_view is 0: the detector has no input for it")
            return torch.cat(parts, -1)
        if pixel_view is None:
            raise ValueError(f"boundary_pixel_view is {self.boundary_pixel_view}: observe() needs pixel_view "
                             f"[B, T, {self.boundary_pixel_view}] (a FrameChangeEncoder's features)")
        self._check("pixel_view", pixel_view, (*embed.shape[:2], self.boundary_pixel_view))
        return torch.cat([*parts, pixel_view.to(embed.dtype)], -1)

    @torch.no_grad()
    def _surprise(self, embed: Tensor, action: Tensor, keep: Tensor, state: TensorDict,
                  reset_steps: list | None) -> Tensor:
        """``log(1 + KL(q(s_t) || p(s_t)))`` ``[B, T, 1]`` of an all-COPY pass (``boundary_surprise``), and
        with ``boundary_surprise_abstract`` the abstract step of the same pass beside it, ``[B, T, 2]``."""
        outs, latents = self._copy_pass(embed, action, keep, state, reset_steps)
        shift, spread = gaussian_kl_parts(*latents)
        measured = shift if self.boundary_surprise_measure == "shift" else shift + spread
        surprise = torch.log1p(measured).unsqueeze(-1)
        if not self.boundary_surprise_abstract:
            return surprise
        belief = torch.stack([o["abs_belief"] for o in outs], 1)[:, 1:]
        now = self.post_abs.mean_std(torch.cat([belief, embed[:, 1:]], -1))
        before = self.post_abs.mean_std(torch.cat([belief, embed[:, :-1]], -1))
        step = torch.log1p(gaussian_kl(*now, *before)).unsqueeze(-1) * keep[:, 1:]  # none across an episode start
        return torch.cat([surprise, F.pad(step, (0, 0, 1, 0))], -1)

    def _copy_pass(self, embed: Tensor, action: Tensor, keep: Tensor, state: TensorDict,
                   reset_steps: list | None) -> tuple[list, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """A pass that never READs after the first step (the detector unread): its per-step states and
        the observation latent's posterior and prior ``(post_mean, post_std, prior_mean, prior_std)``,
        each ``[B, T, obs_stoch_dim]`` (plain tensors: this runs inside the compiled training step)."""
        B, T = embed.shape[:2]
        copy = torch.zeros(B, T, 1, device=embed.device, dtype=embed.dtype)
        no_logits = torch.zeros(B, T, 2, device=embed.device, dtype=embed.dtype)
        reads, logits = self._posterior_boundaries(no_logits, None, state, keep, reset_steps, copy)
        zeros = lambda n: torch.zeros(B, T, n, device=embed.device, dtype=embed.dtype)  # noqa: E731
        _, outs = self._unroll(embed, action, keep, state, reset_steps, reads, logits, embed,
                               zeros(self.abs_stoch_dim), zeros(self.obs_stoch_dim))
        post_mean, post_std = (torch.stack([o[k] for o in outs], 1) for k in ("obs_mean", "obs_std"))
        prior_mean, prior_std = self.prior_obs.mean_std(torch.stack([o["obs_belief"] for o in outs], 1))
        return outs, (post_mean, post_std, prior_mean, prior_std)

    def _detector_logits(self, embed: Tensor, action: Tensor, keep: Tensor, state: TensorDict,
                         reset_steps: list | None, pixel_view: Tensor | None) -> Tensor:
        """The posterior detector's ``[B, T, 2]`` logits, before forcing and the segment limits."""
        surprise = self._surprise(embed, action, keep, state, reset_steps) if self.boundary_surprise else None
        # [B, T, 1] * [2]: the skip moves the READ logit only
        skip = self.surprise_skip(surprise, keep) * self._read_column if self.surprise_skip is not None else 0.0
        if not self.boundary_conv:
            return skip
        return self.post_boundary(self._detector_input(embed, pixel_view, surprise)) + skip

    def detector_logits(self, embed: Tensor, action: Tensor, is_first: Tensor,
                        pixel_view: Tensor | None = None) -> Tensor:
        """READ/COPY logits ``[B, T, 2]`` of the posterior detector from a fresh state, as
        :meth:`observe` computes them before forcing (what an analysis of the detector reads)."""
        return self._detector_logits(*self._fresh_pass(embed, action, is_first), pixel_view)

    def copy_surprise(self, embed: Tensor, action: Tensor, is_first: Tensor) -> Tensor:
        """The surprise ``log(1 + KL(q(s_t) || p(s_t)))`` ``[B, T, 1]`` of an all-COPY pass from a fresh
        state (``[B, T, 2]`` with ``boundary_surprise_abstract``): what the ``boundary_surprise``
        detector reads, for any trained model (an analysis asks how it behaves after a change)."""
        return self._surprise(*self._fresh_pass(embed, action, is_first))

    @torch.no_grad()
    def copy_latents(self, embed: Tensor, action: Tensor, is_first: Tensor) -> TensorDict:
        """The all-COPY pass that :meth:`copy_surprise` reads, before it is reduced to one number per step.

        Returns a ``[B, T]`` TensorDict: the observation latent's posterior and prior (``post_mean``,
        ``post_std``, ``prior_mean``, ``prior_std``, each ``[B, T, obs_stoch_dim]``) and ``context``
        ``[B, T, feat_dim - obs_stoch_dim]``, the rest of :meth:`get_feat` (abstract belief and
        latent, observation belief), so that an analysis can decode either latent's frame or compare
        other measures of the same surprise.
        """
        outs, latents = self._copy_pass(*self._fresh_pass(embed, action, is_first))
        context = torch.cat([torch.stack([o[k] for o in outs], 1) for k in self.FEAT_KEYS[:-1]], -1)
        names = ("post_mean", "post_std", "prior_mean", "prior_std")
        return TensorDict({**dict(zip(names, latents)), "context": context}, batch_size=embed.shape[:2])

    def _fresh_pass(self, embed: Tensor, action: Tensor, is_first: Tensor) -> tuple:
        """``(embed, action, keep, state, reset_steps)`` for a pass over ``embed`` from a fresh state."""
        B, T = embed.shape[:2]
        self._check("is_first", is_first, (B, T, 1))
        keep, reset_steps = self._episode_starts(is_first, embed.dtype)
        return embed, action * keep, keep, self.initial(B), reset_steps

    @staticmethod
    def _episode_starts(is_first: Tensor, dtype: torch.dtype) -> tuple[Tensor, list | None]:
        """``keep`` (0.0 where an episode starts) ``[B, T, 1]`` and the steps where any sequence starts one."""
        keep = (~is_first.bool()).to(dtype)
        # eager: one host read, and only steps with an episode start pay for the reset; a compiled
        # graph cannot read the host, and there the reset fuses into the step for free
        reset_steps = None if torch.compiler.is_compiling() else is_first.bool().any(0)[:, 0].tolist()
        return keep, reset_steps

    def _unroll(self, embed: Tensor, action: Tensor, keep: Tensor, state: TensorDict, reset_steps: list | None,
                reads: list, logits: list, abs_embed: Tensor, abs_noise: Tensor,
                obs_noise: Tensor) -> tuple[list, list]:
        """The posterior state recursion given the READ flags: the states before and after each step."""
        prev = {k: state[k] for k in VTA_STATE_KEYS}
        prevs, outs = [], []
        for t in range(embed.shape[1]):
            if reset_steps is None or reset_steps[t]:
                prev = self._reset(prev, keep[:, t])
            prevs.append(prev)
            out = self._step(prev, action[:, t], reads[t], embed[:, t], abs_noise[:, t], obs_noise[:, t],
                             abs_embed[:, t])
            out.update(boundary=reads[t], boundary_logit=logits[t])
            outs.append(out)
            prev = out
        return prevs, outs

    def _prior_boundary_logits(self, prev: TensorDict | dict, action: Tensor) -> Tensor:
        feat = torch.cat([*(prev[k] for k in self.FEAT_KEYS), action], -1)  # get_feat's layout, one cat
        return self._regularize(self.prior_boundary(feat), prev["seg_len"], prev["seg_num"])

    def _posterior_boundaries(self, logits_all: Tensor, gumbel: Tensor | None, state: TensorDict, keep: Tensor,
                              reset_steps: list | None, boundary: Tensor | None) -> tuple[list, list]:
        """Posterior READ flags and regularised logits per step (lists of ``[B, 1]`` / ``[B, 2]``).

        They depend only on the detector's logits, the noise and the segment counters, not on the
        latent states, so they are drawn before the state recursion.
        """
        seg_len, seg_num = state["seg_len"], state["seg_num"]
        reads, logits = [], []
        for t in range(logits_all.shape[1]):
            if reset_steps is None or reset_steps[t]:
                seg_len, seg_num = seg_len * keep[:, t], seg_num * keep[:, t]
            limits = self._limits(seg_len, seg_num)
            lg = self._regularize(logits_all[:, t], seg_len, seg_num)
            read, lg = self._sample_boundary(lg, limits, None if gumbel is None else gumbel[:, t])
            if boundary is not None:
                read = self._within_limits(boundary[:, t].to(read.dtype), limits)
            elif self.boundary_grad == "local":  # the detector learns from local_boundary_loss instead
                read = read.detach()
            seg_len, seg_num = self._advance_segment(seg_len, seg_num, read)
            reads.append(read)
            logits.append(lg)
        return reads, logits

    def _segment_summary(self, embed: Tensor, reads: list) -> Tensor:
        """Backward GRU over each segment: ``[B, T, E]``, step ``t`` summarises ``t`` .. its segment's end.

        The carry into step ``t - 1`` is multiplied by COPY at ``t``: a READ at ``t`` closes the
        earlier segment, and its straight-through gradient (if any) reaches the boundary detector.
        """
        h = torch.zeros_like(embed[:, 0])
        out = [None] * embed.shape[1]
        for t in reversed(range(embed.shape[1])):
            h = self.segment_gru(embed[:, t], h)
            out[t] = h
            h = h * (1.0 - reads[t])
        return torch.stack(out, 1)

    def observe(
        self, embed: Tensor, action: Tensor, is_first: Tensor, state: TensorDict | None = None,
        boundary: Tensor | None = None, pixel_view: Tensor | None = None,
    ) -> tuple[TensorDict, TensorDict]:
        """Posterior and prior states ``[B, T]`` (see the module docstring and the Dynamics protocol).

        ``boundary`` (``[B, T, 1]`` READ flags, optional) replaces the posterior detector's samples,
        to measure what a READ at a given step is worth (:mod:`imwm.analysis.read_effect`); a
        segment start the state requires (``seg_num == 0``) stays READ. ``pixel_view``
        (``[B, T, boundary_pixel_view]``) is required exactly when ``boundary_pixel_view > 0``.
        """
        if embed.dim() != 3:
            raise ValueError(f"embed must be [B, T, E], got shape {tuple(embed.shape)}")
        B, T = embed.shape[:2]
        self._check("embed", embed, (B, T, self.embed_dim))
        self._check("action", action, (B, T, self.action_dim))
        self._check("is_first", is_first, (B, T, 1))
        if boundary is not None:
            self._check("boundary", boundary, (B, T, 1))
        if state is None:
            state = self.initial(B)
        keep, reset_steps = self._episode_starts(is_first, embed.dtype)
        action = action * keep
        post_logits_all = self._detector_logits(embed, action, keep, state, reset_steps, pixel_view)  # one pass
        gumbel = self._gumbel((B, T, 2), embed)
        abs_noise = torch.randn(B, T, self.abs_stoch_dim, device=embed.device, dtype=embed.dtype)
        obs_noise = torch.randn(B, T, self.obs_stoch_dim, device=embed.device, dtype=embed.dtype)

        reads, logits = self._posterior_boundaries(post_logits_all, gumbel, state, keep, reset_steps, boundary)
        abs_embed = self._segment_summary(embed, reads) if self.segment_posterior else embed

        prevs, outs = self._unroll(embed, action, keep, state, reset_steps, reads, logits, abs_embed, abs_noise,
                                   obs_noise)

        post = {key: torch.stack([o[key] for o in outs], 1) for key in VTA_STATE_KEYS}
        posterior = self._state((B, T), **post)
        # priors, batched over [B, T]
        before = {key: torch.stack([p[key] for p in prevs], 1) for key in VTA_STATE_KEYS}
        prior_logits = self._prior_boundary_logits(before, action)
        forced, blocked = self._limits(before["seg_len"], before["seg_num"])
        fixed = forced if blocked is None else forced | blocked  # where the posterior's logits are fixed
        prior_logits = torch.where(fixed, post["boundary_logit"].detach(), prior_logits)
        abs_mean, abs_std = self.prior_abs.mean_std(post["abs_belief"])
        obs_mean, obs_std = self.prior_obs.mean_std(post["obs_belief"])
        prior = self._state(
            (B, T),
            abs_belief=post["abs_belief"], abs_stoch=abs_mean + abs_std * torch.randn_like(abs_std),
            abs_mean=abs_mean, abs_std=abs_std,
            obs_belief=post["obs_belief"], obs_stoch=obs_mean + obs_std * torch.randn_like(obs_std),
            obs_mean=obs_mean, obs_std=obs_std,
            boundary=post["boundary"], boundary_logit=prior_logits, seg_len=post["seg_len"], seg_num=post["seg_num"],
        )
        return posterior, prior

    def obs_step(
        self, state: TensorDict, action: Tensor, embed: Tensor, is_first: Tensor
    ) -> tuple[TensorDict, TensorDict]:
        """One online step: boundary from the (regularised) prior detector, state posterior from ``embed``."""
        B = embed.shape[0]
        self._check("embed", embed, (B, self.embed_dim))
        self._check("action", action, (B, self.action_dim))
        self._check("is_first", is_first, (B, 1))
        k = (~is_first.bool()).to(embed.dtype)
        prev = self._reset({key: state[key] for key in VTA_STATE_KEYS}, k)
        action = action * k
        logits = self._prior_boundary_logits(prev, action)
        read, logits = self._sample_boundary(logits, self._limits(prev["seg_len"], prev["seg_num"]),
                                             self._gumbel((B, 2), embed))
        noise = lambda n: torch.randn(B, n, device=embed.device, dtype=embed.dtype)  # noqa: E731
        abs_embed = self.segment_gru(embed) if self.segment_posterior else None  # a segment of one frame
        out = self._step(prev, action, read, embed, noise(self.abs_stoch_dim), noise(self.obs_stoch_dim), abs_embed)
        out.update(boundary=read, boundary_logit=logits)
        posterior = self._state((B,), **out)
        abs_mean, abs_std = self.prior_abs.mean_std(out["abs_belief"])
        obs_mean, obs_std = self.prior_obs.mean_std(out["obs_belief"])
        prior = posterior.clone(False)
        prior.update(dict(abs_mean=abs_mean, abs_std=abs_std, obs_mean=obs_mean, obs_std=obs_std,
                          abs_stoch=abs_mean + abs_std * torch.randn_like(abs_std),
                          obs_stoch=obs_mean + obs_std * torch.randn_like(obs_std)))
        return posterior, prior

    def img_step(self, state: TensorDict, action: Tensor) -> TensorDict:
        """Prior step for imagination; boundary sampled from the prior detector. Any leading batch shape."""
        if action.shape[-1] != self.action_dim:
            raise ValueError(f"action must end with action_dim={self.action_dim}, got {tuple(action.shape)}")
        lead = action.shape[:-1]
        if tuple(state.batch_size) != tuple(lead):
            raise ValueError(f"state batch {tuple(state.batch_size)} and action batch {tuple(lead)} differ")
        prev = {key: state[key].reshape(-1, state[key].shape[-1]) for key in VTA_STATE_KEYS}
        a = action.reshape(-1, self.action_dim)
        n = a.shape[0]
        logits = self._prior_boundary_logits(prev, a)
        read, logits = self._sample_boundary(logits, self._limits(prev["seg_len"], prev["seg_num"]),
                                             self._gumbel((n, 2), a))
        out = self._step(prev, a, read, None,
                         torch.randn(n, self.abs_stoch_dim, dtype=a.dtype, device=a.device),
                         torch.randn(n, self.obs_stoch_dim, dtype=a.dtype, device=a.device))
        out.update(boundary=read, boundary_logit=logits)
        return self._state(lead, **{k: v.reshape(*lead, v.shape[-1]) for k, v in out.items()})

    def kl_loss(
        self, posterior: TensorDict, prior: TensorDict, *, free_bits: float = 1.0, dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Boundary-weighted KL balancing with free bits, per step ``[B, T]``.

        ``loss = READ * [dyn_scale * max(fb, KL_z(sg q || p)) + rep_scale * max(fb, KL_z(q || sg p))]
        + obs_kl_scale * [dyn_scale * max(fb, KL_s(sg q || p)) + rep_scale * max(fb, KL_s(q || sg p))]
        + dyn_scale * KL_m(sg q || p) + rep_scale * KL_m(q || sg p)
        + boundary_scale * KL(Bern(mean_t q_t(READ)) || Bern(boundary_rate))``

        The rate prior is per sequence (the mean READ probability over its steps, the forced first
        READ excluded; :func:`imwm.vta.boundary.rate_prior_kl`), added to every step of it.

        ``z`` is the abstract latent (its KL counts only where a segment starts; on COPY the state
        is a copy and contributes nothing), ``s`` the observation latent, ``m`` the boundary.

        Returns:
            ``loss [B, T]`` and detached metrics, all ``[B, T]``: ``kl`` (raw ``READ * KL_z + KL_s +
            KL_m``), ``kl_abs`` (raw, unweighted), ``kl_obs``, ``kl_boundary``, ``kl_state`` (the
            ``z`` and ``s`` terms of ``loss``, weighted and clipped as there), ``boundary_kl`` (the
            sequence's rate-prior KL on each of its steps, zeros when off), ``read_rate`` (the READ flags), ``read_prob``.
        """
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0, got {free_bits!r}")
        for key in ("abs_mean", "obs_mean", "boundary_logit"):
            if posterior[key].shape != prior[key].shape:
                raise ValueError(f"posterior {key} {tuple(posterior[key].shape)} and prior {tuple(prior[key].shape)} differ")
        q, p = posterior, prior
        read = q["boundary"][..., 0]

        def balanced(kl_fn, qa, qb, pa, pb):
            dyn = kl_fn(qa.detach(), qb.detach(), pa, pb)
            rep = kl_fn(qa, qb, pa.detach(), pb.detach())
            return dyn, rep

        dyn_z, rep_z = balanced(gaussian_kl, q["abs_mean"], q["abs_std"], p["abs_mean"], p["abs_std"])
        dyn_s, rep_s = balanced(gaussian_kl, q["obs_mean"], q["obs_std"], p["obs_mean"], p["obs_std"])
        dyn_m = _cat_kl(q["boundary_logit"].detach(), p["boundary_logit"])
        rep_m = _cat_kl(q["boundary_logit"], p["boundary_logit"].detach())
        kl_state = (
            read * (dyn_scale * dyn_z.clamp_min(free_bits) + rep_scale * rep_z.clamp_min(free_bits))
            + self.obs_kl_scale
            * (dyn_scale * dyn_s.clamp_min(free_bits) + rep_scale * rep_s.clamp_min(free_bits))
        )
        loss = kl_state + dyn_scale * dyn_m + rep_scale * rep_m
        read_prob = torch.softmax(q["boundary_logit"], -1)[..., 0]
        first = (q["seg_num"][..., 0] < 1.5) & (read > 0.5)  # forced first READ: not in the rate
        if self.boundary_scale > 0:
            if read_prob.dim() != 2:
                raise ValueError(f"the boundary-rate prior needs [B, T] states, got {tuple(read_prob.shape)}")
            rate_kl = rate_prior_kl(read_prob, self.boundary_rate, ~first).unsqueeze(1).expand_as(read_prob)
            loss = loss + self.boundary_scale * rate_kl
        else:
            rate_kl = torch.zeros_like(read_prob)
        metrics = {
            "kl": (read * dyn_z + dyn_s + dyn_m).detach(),
            "kl_abs": dyn_z.detach(),
            "kl_obs": dyn_s.detach(),
            "kl_boundary": dyn_m.detach(),
            "kl_state": kl_state.detach(),
            "boundary_kl": rate_kl.detach(),
            "read_rate": read.detach(),
            "read_prob": read_prob.detach(),
        }
        return loss, metrics

    def entropy(self, state: TensorDict) -> Tensor:
        """Entropy of the two diagonal Gaussians, ``sum(log std) + D/2 * log(2 pi e)``, ``[..., 1]``."""
        d = state["abs_std"].shape[-1] + state["obs_std"].shape[-1]
        logs = state["abs_std"].log().sum(-1, keepdim=True) + state["obs_std"].log().sum(-1, keepdim=True)
        return logs + 0.5 * d * math.log(2 * math.pi * math.e)

    def uncertainty(self, state: TensorDict) -> Tensor:
        """Mean std of the observation-level latent, ``[..., 1]``.

        The observation level is the one that changes every step (the abstract latent is copied
        inside a segment), so its std is the per-step spread that intrinsic rewards read as
        ``Std(s')``.
        """
        return state["obs_std"].mean(-1, keepdim=True)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def jumpy_generation(self, state: TensorDict, steps: int) -> TensorDict:
        """Abstract-level rollout from ``state [B]``: every step is a READ, one step = one segment.

        The observation level is re-initialised at each READ (its first step of the segment is
        returned, so a decoder can render one frame per segment). Actions are zeros.

        Returns:
            TensorDict ``[B, steps]`` with the VTA state keys.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        B = state.batch_size[0]
        prev = {key: state[key] for key in VTA_STATE_KEYS}
        ref = prev["abs_belief"]
        read = torch.ones(B, 1, dtype=ref.dtype, device=ref.device)
        a = torch.zeros(B, self.action_dim, dtype=ref.dtype, device=ref.device)
        logit = torch.tensor([_FORCED_READ_LOGIT, -_FORCED_READ_LOGIT], dtype=ref.dtype, device=ref.device).expand(B, 2)
        outs = []
        for _ in range(steps):
            out = self._step(prev, a, read, None, torch.randn_like(prev["abs_stoch"]), torch.randn_like(prev["obs_stoch"]))
            out.update(boundary=read, boundary_logit=logit)
            outs.append(out)
            prev = out
        return self._state((B, steps), **{k: torch.stack([o[k] for o in outs], 1) for k in VTA_STATE_KEYS})

    @torch.no_grad()
    def full_generation(self, state: TensorDict, steps: int, action: Tensor | None = None) -> TensorDict:
        """Frame-level rollout from ``state [B]``: both levels step, boundaries from the prior.

        Args:
            state: start state ``[B]``.
            steps: number of steps.
            action: optional ``[B, steps, A]`` actions (zeros when None).

        Returns:
            TensorDict ``[B, steps]`` with the VTA state keys.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        B = state.batch_size[0]
        if action is None:
            action = torch.zeros(B, steps, self.action_dim, dtype=state["abs_belief"].dtype, device=state.device)
        self._check("action", action, (B, steps, self.action_dim))
        outs, cur = [], state
        for t in range(steps):
            cur = self.img_step(cur, action[:, t])
            outs.append(cur)
        return torch.stack(outs, 1)
