"""The original VTA model (Kim, Ahn & Bengio, NeurIPS 2019): CNN encoder/decoder, bidirectional posterior.

Generative model per step ``t`` with boundary ``m_t`` (READ = a segment starts at ``t``)::

    abstract:     h^z_t = READ ? GRU_z(z_{t-1}, h^z_{t-1}) : h^z_{t-1}
                  z_t   = READ ? sample q(z_t | fwd_{t-1}, bwd_t) : z_{t-1}     (prior p(z_t | h^z_t))
    observation:  h^s_t = READ ? init(f^z_t) : GRU_s([s_{t-1}, f^z_t], h^s_{t-1})   (GRU_s(f^z_t, ...) with
                                                                           obs_feedback=False)
                  s_t   ~ q(s_t | obs_fwd_t, f^z_t)                             (prior p(s_t | h^s_t))
    frame:        x_t   ~ Normal(Dec(f^s_t), obs_std),  f = feature of (belief, state)
    boundary:     q(m_t) from a 1-D conv over the encoded sequence; p(m_t | f^s_{t-1})

The posterior is bidirectional: the abstract forward GRU runs over the whole encoded sequence,
the abstract backward GRU runs in reverse and is reset at boundaries (so ``bwd_t`` summarises the
segment that starts at ``t``), and the observation forward GRU is reset at boundaries.

Loss per step (summed over pixels, averaged over batch and time)::

    obs_cost + KL(q(z)||p(z)) * READ + KL(q(s)||p(s)) + [log q_concrete(m) - log p_concrete(m)]

The segment constraints (``max_seg_len``, ``max_seg_num``, ``boundary_force_scale``) act on the
*prior* boundary, as in the authors' code (``regularize_prior_boundary``): the Concrete KL then
pulls the posterior towards them. Frame 0 is always READ. The optional boundary-rate prior
(``boundary_rate``, ``boundary_scale``) adds ``scale * KL(Bern(mean_t q_t(READ)) || Bern(rate))`` per
sequence (:func:`imwm.vta.boundary.rate_prior_kl`; frame 0 excluded).

Written from the paper (Kim, Ahn & Bengio 2019); the authors' code was not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from imwm.errors import check_bool, check_integer
from imwm.vta.boundary import boundary_sample, log_density_concrete, rate_prior_kl, regularize_boundary
from imwm.vta.frame_change import FrameChangeEncoder
from imwm.vta.local_gradient import BOUNDARY_GRADS, add_local_gradient, check_boundary_grad
from imwm.vta.layers import LatentDistribution, PostBoundaryDetector, PriorBoundaryDetector, gaussian_kl
from imwm.vta.options import BoundaryOptions

__all__ = ["VTAOriginal", "ConvEncoder", "ConvDecoder", "gaussian_kl", "BOUNDARY_GRADS"]


class ConvEncoder(nn.Module):
    """4 x [Conv2d(k=4, s=2, p=1) -> BatchNorm -> ELU] -> Flatten -> Linear -> ELU.

    ``[N, C, S, S]`` in ``[-1, 1]`` -> ``[N, embed_dim]``; ``S`` must be divisible by 16.

    Example:
        >>> encoder = ConvEncoder(image_size=16, channels=3, depth=2, embed_dim=8)
        >>> encoder(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 8])
    """

    def __init__(self, image_size: int, channels: int, depth: int, embed_dim: int):
        super().__init__()
        layers, cin = [], channels
        for i in range(4):
            cout = depth * 2**i
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ELU()]
            cin = cout
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Sequential(nn.Linear(cin * (image_size // 16) ** 2, embed_dim), nn.ELU())

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.convs(x))


class ConvDecoder(nn.Module):
    """Linear -> 3 x [ConvTranspose2d(k=4, s=2, p=1) -> BatchNorm -> ELU] -> ConvTranspose2d -> Tanh.

    Example:
        >>> decoder = ConvDecoder(feat_dim=8, image_size=16, channels=3, depth=2)
        >>> decoder(torch.zeros(2, 8)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, feat_dim: int, image_size: int, channels: int, depth: int):
        super().__init__()
        self.base, self.cin = image_size // 16, depth * 8
        self.fc = nn.Sequential(nn.Linear(feat_dim, self.cin * self.base**2), nn.ELU())
        layers, cin = [], self.cin
        for i in (2, 1, 0):
            cout = depth * 2**i
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ELU()]
            cin = cout
        layers += [nn.ConvTranspose2d(cin, channels, 4, 2, 1), nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, feat: Tensor) -> Tensor:
        return self.deconvs(self.fc(feat).view(-1, self.cin, self.base, self.base))


class VTAOriginal(BoundaryOptions):
    """Original VTA with its own CNN encoder/decoder, bidirectional posterior and full loss.

    Args:
        image_size, channels: frame geometry (``image_size`` divisible by 16).
        cnn_depth: channels of the first conv (doubling per layer).
        embed_dim: encoder output size.
        belief_dim: GRU size of every recurrent belief (abstract/observation, forward/backward).
        state_dim: size of the abstract and observation Gaussian latents.
        hidden_dim: hidden size of latent heads and feature layers.
        boundary_layers: number of k=3 conv blocks of the posterior boundary detector.
        boundary_diff: the detector also reads ``embed_t - embed_{t-1}``
            (:class:`~imwm.vta.layers.PostBoundaryDetector`).
        boundary_causal: the detector sees only ``embed[: t + 1]`` for step ``t`` (two steps back per
            block) instead of a window centred on ``t``, so its READ probability at ``t`` does not
            depend on frames after ``t`` (in eval mode: in training its BatchNorm mixes all steps).
        boundary_pixel_view: the detector also reads that many features of the frame change
            ``|x_t - x_{t-1}|`` from its own small CNN (:class:`~imwm.vta.frame_change.FrameChangeEncoder`);
            0 (default): it reads ``embed`` only.
        boundary_grad: ``"straight_through"`` (the paper's): the cost's gradient reaches the
            detector through the sampled READ flags. ``"local"``: the flags carry no gradient;
            instead, in training mode with gradients enabled and no ``boundary`` forced, ``loss``
            carries the gradient of
            :func:`~imwm.vta.local_gradient.local_boundary_loss` (the cost difference of READ against
            COPY at one step per sequence, two extra gradient-free passes) with its value unchanged,
            so any loop that backpropagates ``loss`` trains the detector this way.
        obs_std: std of the Gaussian reconstruction likelihood (frames scaled to ``[-1, 1]``).
        obs_feedback: feed the previous observation state ``s_{t-1}`` into ``GRU_s``, as the paper
            does. With ``False`` the observation level inside a segment is driven by ``f^z`` alone
            (``h^s_t = GRU_s(f^z_t, h^s_{t-1})``), so its prior can only predict what the segment's
            ``z`` and the steps since the READ determine: a change left without a READ is paid in
            ``KL(q(s)||p(s))`` at every later step of the segment instead of once, which makes a
            READ at a change worth more than a READ elsewhere.
        **boundary options**: ``max_seg_len``, ``max_seg_num``, ``boundary_temp``,
            ``boundary_temp_min``, ``boundary_temp_anneal_rate``, ``boundary_force_scale``,
            ``boundary_force_schedule``, ``boundary_force_start``, ``boundary_force_decay_updates``,
            ``boundary_rate``, ``boundary_scale`` (see :mod:`imwm.vta.options`).

    ``forward(obs [B, T, C, H, W], boundary=None)`` (uint8 0..255, or float already in ``[-1, 1]``;
    ``boundary`` ``[B, T, 1]``, optional READ flags that replace the posterior's, to measure what a
    READ at a given step costs) returns a
    TensorDict (batch ``[]``) with ``loss`` (scalar), per-step ``obs_cost``, ``kl_abs`` (weighted
    by READ), ``kl_abs_raw``, ``kl_obs``, ``kl_mask``, ``boundary_kl`` ``[B, T]``, and ``boundary``
    (1.0 = READ), ``read_prob``, ``prior_read_prob``, ``seg_len``, ``seg_num`` ``[B, T, 1]``, and
    ``recon`` ``[B, T, C, H, W]`` in ``[-1, 1]``. In ``train()`` mode boundaries are Gumbel samples;
    in ``eval()`` mode they are the mode (argmax) of the posterior.

    Example:
        >>> m = VTAOriginal(image_size=32, cnn_depth=4, embed_dim=16, belief_dim=16, state_dim=4, hidden_dim=16)
        >>> out = m(torch.randint(0, 255, (2, 6, 3, 32, 32), dtype=torch.uint8))
        >>> out["loss"].shape, out["boundary"].shape
        (torch.Size([]), torch.Size([2, 6, 1]))
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        channels: int = 3,
        cnn_depth: int = 32,
        embed_dim: int = 128,
        belief_dim: int = 128,
        state_dim: int = 8,
        hidden_dim: int = 128,
        boundary_layers: int = 2,
        boundary_diff: bool = False,
        boundary_causal: bool = False,
        boundary_pixel_view: int = 0,
        boundary_grad: str = "straight_through",
        obs_std: float = 1.0,
        obs_feedback: bool = True,
        **boundary_options,
    ):
        super().__init__()
        if image_size < 16 or image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size!r}")
        if obs_std <= 0:
            raise ValueError(f"obs_std must be > 0, got {obs_std!r}")
        check_bool("obs_feedback", obs_feedback)
        self._init_boundary_options(**boundary_options)
        self.image_size, self.channels, self.obs_std = image_size, channels, float(obs_std)
        self.belief_dim, self.state_dim = belief_dim, state_dim
        self.obs_feedback = bool(obs_feedback)
        self.boundary_grad = check_boundary_grad(boundary_grad)
        self.encoder = ConvEncoder(image_size, channels, cnn_depth, embed_dim)
        self.decoder = ConvDecoder(hidden_dim, image_size, channels, cnn_depth)
        # posterior RNNs
        self.abs_post_fwd = nn.GRUCell(embed_dim, belief_dim)
        self.abs_post_bwd = nn.GRUCell(embed_dim, belief_dim)
        self.obs_post_fwd = nn.GRUCell(embed_dim, belief_dim)
        view = check_integer("boundary_pixel_view", boundary_pixel_view, 0)
        self.frame_change = FrameChangeEncoder(channels=channels, features=view) if view else None
        self.post_boundary = PostBoundaryDetector(
            embed_dim + view, hidden_dim=hidden_dim, num_layers=boundary_layers, flavour="original",
            diff=boundary_diff, causal=boundary_causal,
        )
        # generative model
        ld = dict(hidden_dim=hidden_dim, flavour="original")
        self.update_abs_belief = nn.GRUCell(state_dim, belief_dim)
        self.prior_abs_state = LatentDistribution(belief_dim, state_dim, **ld)
        self.post_abs_state = LatentDistribution(2 * belief_dim, state_dim, **ld)
        self.abs_feat = nn.Sequential(nn.Linear(belief_dim + state_dim, hidden_dim), nn.ELU())
        self.init_obs_belief = nn.Sequential(nn.Linear(hidden_dim, belief_dim), nn.ELU())
        self.update_obs_belief = nn.GRUCell((state_dim if obs_feedback else 0) + hidden_dim, belief_dim)
        self.prior_obs_state = LatentDistribution(belief_dim, state_dim, **ld)
        self.post_obs_state = LatentDistribution(belief_dim + hidden_dim, state_dim, **ld)
        self.obs_feat = nn.Sequential(nn.Linear(belief_dim + state_dim, hidden_dim), nn.ELU())
        self.prior_boundary = PriorBoundaryDetector(hidden_dim, flavour="original")

    # ------------------------------------------------------------------ helpers
    def _frames(self, obs: Tensor) -> Tensor:
        want = (self.channels, self.image_size, self.image_size)
        if obs.dim() != 5 or tuple(obs.shape[2:]) != want:
            raise ValueError(f"obs must be [B, T, {want[0]}, {want[1]}, {want[2]}], got shape {tuple(obs.shape)}")
        if obs.shape[1] < 2:
            raise ValueError(f"obs needs at least 2 time steps, got T={obs.shape[1]}")
        if obs.dtype == torch.uint8:
            return obs.float() / 127.5 - 1.0
        return obs.float()

    @staticmethod
    def _segment_stats(read: Tensor) -> tuple[Tensor, Tensor]:
        """seg_len / seg_num after each step from hard READ flags ``[B, T, 1]`` (vectorised)."""
        t_idx = torch.arange(read.shape[1], device=read.device, dtype=read.dtype).view(1, -1, 1)
        last_read = torch.where(read > 0.5, t_idx, torch.full_like(read, -1.0)).cummax(dim=1).values
        return t_idx - last_read + 1.0, read.cumsum(1)

    def _abs_step(self, read, copy, abs_belief, abs_state, post_mean, post_std, noise):
        abs_belief = read * self.update_abs_belief(abs_state, abs_belief) + copy * abs_belief
        abs_state = read * (post_mean + post_std * noise) + copy * abs_state
        return abs_belief, abs_state

    def _obs_belief_step(self, read, copy, abs_feat, obs_belief, obs_state):
        inp = torch.cat([obs_state, abs_feat], -1) if self.obs_feedback else abs_feat
        new = self.update_obs_belief(inp, obs_belief)
        return read * self.init_obs_belief(abs_feat) + copy * new

    # ------------------------------------------------------------------ posterior pass
    def _posterior(self, frames: Tensor, forced: Tensor | None = None) -> dict:
        B, T = frames.shape[:2]
        embed = self.encoder(frames.flatten(0, 1)).view(B, T, -1)
        detector_in = embed if self.frame_change is None else torch.cat([embed, self.frame_change(frames)], -1)
        post_logits = self.post_boundary(detector_in)
        boundary, log_sample = boundary_sample(post_logits, self.current_temp, sample=self.training)
        if self.boundary_grad == "local":  # the detector learns from local_boundary_loss instead
            boundary = boundary.detach()
        if forced is not None:  # given READ flags (diagnostics): a near one-hot "sample" of them
            onehot = torch.cat([forced, 1.0 - forced], -1).to(boundary.dtype)
            boundary, log_sample = onehot, torch.log_softmax(onehot * 20.0, -1)
        first = torch.zeros_like(boundary[:, :1])
        first[..., 0] = 1.0
        boundary = torch.cat([first, boundary[:, 1:]], 1)  # frame 0 always starts a segment
        read, copy = boundary[..., :1], boundary[..., 1:]
        seg_len, seg_num = self._segment_stats((read.detach() > 0.5).to(read.dtype))

        # bidirectional posterior RNNs
        h_af = embed.new_zeros(B, self.belief_dim)
        h_of, h_ab = h_af.clone(), h_af.clone()
        abs_fwd, obs_fwd, abs_bwd = [], [], [None] * T
        for t in range(T):
            h_af = self.abs_post_fwd(embed[:, t], h_af)
            h_of = self.obs_post_fwd(embed[:, t], copy[:, t] * h_of)
            abs_fwd.append(h_af)
            obs_fwd.append(h_of)
        for t in reversed(range(T)):
            h_ab = self.abs_post_bwd(embed[:, t], h_ab)
            abs_bwd[t] = h_ab
            h_ab = copy[:, t] * h_ab
        abs_fwd = torch.stack(abs_fwd, 1)
        abs_fwd_prev = torch.cat([torch.zeros_like(abs_fwd[:, :1]), abs_fwd[:, :-1]], 1)
        post_abs_mean, post_abs_std = self.post_abs_state.mean_std(torch.cat([abs_fwd_prev, torch.stack(abs_bwd, 1)], -1))
        abs_noise = torch.randn_like(post_abs_mean)

        # generative recursion (only the recurrent parts stay in the loop)
        abs_belief = embed.new_zeros(B, self.belief_dim)
        obs_belief = embed.new_zeros(B, self.belief_dim)
        abs_state = embed.new_zeros(B, self.state_dim)
        obs_state = embed.new_zeros(B, self.state_dim)
        keep = {k: [] for k in ("abs_belief", "abs_state", "obs_belief", "obs_state", "post_obs_mean", "post_obs_std", "abs_feat")}
        for t in range(T):
            r, c = read[:, t], copy[:, t]
            abs_belief, abs_state = self._abs_step(
                r, c, abs_belief, abs_state, post_abs_mean[:, t], post_abs_std[:, t], abs_noise[:, t]
            )
            abs_feat = self.abs_feat(torch.cat([abs_belief, abs_state], -1))
            obs_belief = self._obs_belief_step(r, c, abs_feat, obs_belief, obs_state)
            mean, std = self.post_obs_state.mean_std(torch.cat([obs_fwd[t], abs_feat], -1))
            obs_state = mean + std * torch.randn_like(std)
            for k, v in zip(keep, (abs_belief, abs_state, obs_belief, obs_state, mean, std, abs_feat)):
                keep[k].append(v)
        out = {k: torch.stack(v, 1) for k, v in keep.items()}
        out.update(
            embed=embed, post_logits=post_logits, log_sample=log_sample, boundary=boundary,
            post_abs_mean=post_abs_mean, post_abs_std=post_abs_std, seg_len=seg_len, seg_num=seg_num,
        )
        out["obs_feat"] = self.obs_feat(torch.cat([out["obs_belief"], out["obs_state"]], -1))
        return out

    def _prior_boundary_logits(self, obs_feat_prev: Tensor, seg_len_prev: Tensor, seg_num_prev: Tensor) -> Tensor:
        logits = self.prior_boundary(obs_feat_prev)
        return regularize_boundary(
            logits, seg_len_prev, seg_num_prev, self.max_seg_len, self.max_seg_num, self.current_force_scale
        )

    # ------------------------------------------------------------------ loss
    def forward(self, obs: Tensor, boundary: Tensor | None = None) -> TensorDict:
        frames = self._frames(obs)
        B, T = frames.shape[:2]
        if boundary is not None and tuple(boundary.shape) != (B, T, 1):
            raise ValueError(f"boundary must be [B, T, 1] READ flags, got shape {tuple(boundary.shape)}")
        p = self._posterior(frames, None if boundary is None else boundary.float())
        read = p["boundary"][..., :1]
        recon = self.decoder(p["obs_feat"].flatten(0, 1)).view_as(frames)
        obs_cost = -torch.distributions.Normal(recon, self.obs_std).log_prob(frames).flatten(2).sum(-1)

        prior_abs_mean, prior_abs_std = self.prior_abs_state.mean_std(p["abs_belief"])
        kl_abs_raw = gaussian_kl(p["post_abs_mean"], p["post_abs_std"], prior_abs_mean, prior_abs_std)
        kl_abs = kl_abs_raw * read[..., 0]
        prior_obs_mean, prior_obs_std = self.prior_obs_state.mean_std(p["obs_belief"])
        kl_obs = gaussian_kl(p["post_obs_mean"], p["post_obs_std"], prior_obs_mean, prior_obs_std)

        # prior boundary for step t from the observation feature at t-1 and the stats after t-1
        zeros = torch.zeros_like(p["seg_len"][:, :1])
        prior_logits = self._prior_boundary_logits(
            p["obs_feat"][:, :-1],
            p["seg_len"][:, :-1],
            p["seg_num"][:, :-1],
        )
        prior_logits = torch.cat([torch.zeros_like(prior_logits[:, :1]), prior_logits], 1)
        temp = self.current_temp
        kl_mask = log_density_concrete(p["post_logits"], p["log_sample"], temp) - log_density_concrete(
            prior_logits, p["log_sample"], temp
        )
        kl_mask = torch.cat([zeros[..., 0], kl_mask[:, 1:]], 1)  # frame 0 is forced, not sampled

        read_prob = torch.softmax(p["post_logits"], -1)[..., :1]
        if self.boundary_scale > 0:  # per-sequence rate prior, spread evenly over the steps
            boundary_kl = rate_prior_kl(read_prob[:, 1:, 0], self.boundary_rate).unsqueeze(1).expand(B, T)
        else:
            boundary_kl = torch.zeros_like(kl_mask)
        total = obs_cost + kl_abs + kl_obs + kl_mask + self.boundary_scale * boundary_kl
        loss = total.mean()
        if self.boundary_grad == "local":
            loss = add_local_gradient(self, obs, loss, read=read, read_prob=read_prob, forced=boundary is not None)
        return TensorDict(
            {
                "loss": loss,
                "obs_cost": obs_cost,
                "kl_abs": kl_abs,
                "kl_abs_raw": kl_abs_raw,
                "kl_obs": kl_obs,
                "kl_mask": kl_mask,
                "boundary_kl": boundary_kl,
                "boundary": read,  # straight-through READ flag (value ~exactly 0/1)
                "read_prob": read_prob,
                "prior_read_prob": torch.softmax(prior_logits, -1)[..., :1],
                "seg_len": p["seg_len"],
                "seg_num": p["seg_num"],
                "recon": recon,
            },
            batch_size=[],
        )

    # ------------------------------------------------------------------ generation
    def _sample(self, ld: LatentDistribution, feat: Tensor) -> Tensor:
        mean, std = ld.mean_std(feat)
        return mean + std * torch.randn_like(std)

    @torch.no_grad()
    def jumpy_generation(self, obs: Tensor, steps: int) -> TensorDict:
        """Abstract-level rollout after a context ``obs [B, T0, ...]``: one step = one segment.

        Every step is a READ: ``h^z = GRU_z(z, h^z)``, ``z ~ p(z | h^z)``, the observation level is
        re-initialised from the abstract feature and one frame is decoded per segment.

        Returns:
            TensorDict ``[B, steps]`` with ``frames`` ``[C, H, W]`` in ``[-1, 1]``, ``abs_state``, ``abs_belief``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        p = self._posterior(self._frames(obs))
        abs_belief, abs_state = p["abs_belief"][:, -1], p["abs_state"][:, -1]
        frames, beliefs, states = [], [], []
        for _ in range(steps):
            abs_belief = self.update_abs_belief(abs_state, abs_belief)
            abs_state = self._sample(self.prior_abs_state, abs_belief)
            abs_feat = self.abs_feat(torch.cat([abs_belief, abs_state], -1))
            obs_belief = self.init_obs_belief(abs_feat)
            obs_state = self._sample(self.prior_obs_state, obs_belief)
            frames.append(self.decoder(self.obs_feat(torch.cat([obs_belief, obs_state], -1))))
            beliefs.append(abs_belief)
            states.append(abs_state)
        B = obs.shape[0]
        return TensorDict(
            {"frames": torch.stack(frames, 1), "abs_belief": torch.stack(beliefs, 1), "abs_state": torch.stack(states, 1)},
            batch_size=[B, steps],
        )

    @torch.no_grad()
    def full_generation(self, obs: Tensor, steps: int) -> TensorDict:
        """Frame-by-frame rollout after a context ``obs [B, T0, ...]``; boundaries from the prior.

        Returns:
            TensorDict ``[B, steps]`` with ``frames`` ``[C, H, W]`` in ``[-1, 1]``, ``boundary``,
            ``seg_len``, ``seg_num`` ``[1]``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        p = self._posterior(self._frames(obs))
        abs_belief, abs_state = p["abs_belief"][:, -1], p["abs_state"][:, -1]
        obs_belief, obs_state, obs_feat = p["obs_belief"][:, -1], p["obs_state"][:, -1], p["obs_feat"][:, -1]
        seg_len, seg_num = p["seg_len"][:, -1], p["seg_num"][:, -1]
        keep = {k: [] for k in ("frames", "boundary", "seg_len", "seg_num")}
        for _ in range(steps):
            logits = self._prior_boundary_logits(obs_feat, seg_len, seg_num)
            boundary, _ = boundary_sample(logits, self.current_temp, sample=True)
            r, c = boundary[..., :1], boundary[..., 1:]
            new_belief = self.update_abs_belief(abs_state, abs_belief)
            abs_belief = r * new_belief + c * abs_belief
            abs_state = r * self._sample(self.prior_abs_state, abs_belief) + c * abs_state
            abs_feat = self.abs_feat(torch.cat([abs_belief, abs_state], -1))
            obs_belief = self._obs_belief_step(r, c, abs_feat, obs_belief, obs_state)
            obs_state = self._sample(self.prior_obs_state, obs_belief)
            obs_feat = self.obs_feat(torch.cat([obs_belief, obs_state], -1))
            hard = (r > 0.5).to(r.dtype)
            seg_len = hard + (1.0 - hard) * (seg_len + 1)
            seg_num = seg_num + hard
            for k, v in zip(keep, (self.decoder(obs_feat), r, seg_len, seg_num)):
                keep[k].append(v)
        return TensorDict({k: torch.stack(v, 1) for k, v in keep.items()}, batch_size=[obs.shape[0], steps])
