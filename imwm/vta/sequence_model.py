"""A small DreamerV3-style world model around :class:`VTADynamics`, for video without rewards.

Used by ``scripts/train_vta.py vta=dreamer`` to train the DreamerV3-integrated VTA on recorded
sequences (Moving Shapes) and measure its boundaries the same way as :class:`VTAOriginal`. The
agent's full world model (``imwm.world_model``) plugs VTADynamics in the same way through the
Dynamics protocol; this one only keeps what video needs: encoder -> VTADynamics -> decoder.

- encoder: 4 x [Conv2d(k=4, s=2, p=1) -> channel LayerNorm -> SiLU] -> Flatten -> Linear (DreamerV3 style);
- decoder: Linear -> 4 transposed convs (LayerNorm + SiLU between), mean frame in ``x / 255 - 0.5`` units;
- with ``boundary_pixel_view > 0``, a :class:`~imwm.vta.frame_change.FrameChangeEncoder` of that width
  reads ``|x_t - x_{t-1}|`` and hands its features to the posterior boundary detector only;
- loss per step: ``0.5 * ||(x - x_hat) / obs_std||^2`` summed over pixels (``obs_std = 1`` is DreamerV3's
  image MSE) + ``VTADynamics.kl_loss(free_bits, dyn_scale, rep_scale)``;
- with ``VTADynamics(boundary_grad="local")``, in training mode with gradients enabled and no
  boundaries forced, ``loss`` also carries the gradient (not the value) of
  :func:`~imwm.vta.local_gradient.local_boundary_loss`, whose cost is this training objective
  without the boundary's own terms (``model_cost``: reconstruction + the balanced, clipped state
  KLs), so the detector lowers what the rest of the model lowers.

``forward(obs [B, T, C, H, W] uint8, boundary=None)`` returns the same keys as
:meth:`VTAOriginal.forward` (``kl_mask`` is the categorical boundary KL here) and ``model_cost``
``[B, T]``; ``boundary``
(``[B, T, 1]`` READ flags) replaces the posterior detector's, as there.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from imwm.nn.norm import ChannelLayerNorm
from imwm.vta.dynamics import VTADynamics
from imwm.vta.frame_change import FrameChangeEncoder
from imwm.vta.local_gradient import add_local_gradient

__all__ = ["VTASequenceModel", "model_cost"]


def model_cost(out) -> Tensor:
    """``[B]``: the training objective's reconstruction and state-KL terms summed over time.

    The cost :class:`VTASequenceModel` hands :func:`~imwm.vta.local_gradient.local_boundary_loss`.

    Example:
        >>> model_cost({"model_cost": torch.tensor([[1.0, 2.0], [0.5, 0.5]])})
        tensor([3., 1.])
    """
    return out["model_cost"].sum(1)


class VTASequenceModel(nn.Module):
    """Encoder + :class:`VTADynamics` + decoder trained on unlabelled video (see module docstring).

    Args:
        image_size, channels, cnn_depth, embed_dim: image geometry and encoder/decoder widths.
        free_bits, dyn_scale, rep_scale: DreamerV3 KL balancing passed to ``kl_loss``.
        obs_std: std of the Gaussian image likelihood (1.0 = DreamerV3's MSE); small objects on a
            black background give a weak signal at 1.0, so the Moving Shapes runs use less.
        **dynamics_kwargs: every other kwarg goes to :class:`VTADynamics` (sizes and boundary
            options; ``action_dim`` is 1 and ``embed_dim`` is set here).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = VTASequenceModel(image_size=16, cnn_depth=2, embed_dim=8, abs_belief_dim=8,
        ...     obs_belief_dim=8, abs_stoch_dim=2, obs_stoch_dim=2, hidden=8, boundary_hidden=4)
        >>> out = model(torch.randint(0, 256, (2, 5, 3, 16, 16), dtype=torch.uint8))  # B, T, C, H, W
        >>> out["recon"].shape, out["model_cost"].shape, out["loss"].shape
        (torch.Size([2, 5, 3, 16, 16]), torch.Size([2, 5]), torch.Size([]))
        >>> p = out["read_prob"]   # posterior P(READ) per step
        >>> p.shape, bool(((p >= 0) & (p <= 1)).all()), out["boundary"][:, 0, 0].tolist()
        (torch.Size([2, 5, 1]), True, [1.0, 1.0])
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        channels: int = 3,
        cnn_depth: int = 16,
        embed_dim: int = 256,
        free_bits: float = 1.0,
        dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
        obs_std: float = 1.0,
        **dynamics_kwargs,
    ):
        super().__init__()
        if image_size < 16 or image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size!r}")
        if not obs_std > 0:
            raise ValueError(f"obs_std must be > 0, got {obs_std!r}")
        self.image_size, self.channels, self.obs_std = image_size, channels, float(obs_std)
        self.free_bits, self.dyn_scale, self.rep_scale = float(free_bits), float(dyn_scale), float(rep_scale)
        self.dynamics = VTADynamics(action_dim=1, embed_dim=embed_dim, **dynamics_kwargs)
        view = self.dynamics.boundary_pixel_view
        self.frame_change = FrameChangeEncoder(channels=channels, features=view) if view else None
        layers, cin = [], channels
        for i in range(4):
            cout = cnn_depth * 2**i
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), ChannelLayerNorm(cout), nn.SiLU()]
            cin = cout
        base = image_size // 16
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * base * base, embed_dim))
        self._base, self._cin = base, cin
        self.decoder_in = nn.Linear(self.dynamics.feat_dim, cin * base * base)
        dec = []
        for i in (2, 1, 0):
            cout = cnn_depth * 2**i
            dec += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), ChannelLayerNorm(cout), nn.SiLU()]
            cin = cout
        dec.append(nn.ConvTranspose2d(cin, channels, 4, 2, 1))
        self.decoder = nn.Sequential(*dec)

    # boundary-option interface of VTAOriginal, delegated to the dynamics
    def set_progress(self, update: int) -> None:
        self.dynamics.set_progress(update)

    @property
    def current_temp(self) -> float:
        return self.dynamics.current_temp

    @property
    def current_force_scale(self) -> float:
        return self.dynamics.current_force_scale

    def boundary_options(self) -> dict:
        return self.dynamics.boundary_options()

    def inputs(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What the dynamics observe for ``obs`` ``[B, T, C, H, W]``: the frames in model units, their
        embeddings ``[B, T, embed_dim]``, zero actions ``[B, T, 1]`` and ``is_first`` (frame 0 only)."""
        B, T = obs.shape[:2]
        x = obs.float() / 255.0 - 0.5 if obs.dtype == torch.uint8 else obs.float()
        embed = self.encoder(x.flatten(0, 1)).view(B, T, -1)
        is_first = torch.zeros(B, T, 1, dtype=torch.bool, device=obs.device)
        is_first[:, 0] = True
        return x, embed, embed.new_zeros(B, T, 1), is_first

    def decode(self, feat: Tensor) -> Tensor:
        """Mean frames ``[B, T, C, H, W]`` (model units, ``x / 255 - 0.5``) of features ``[B, T, feat_dim]``."""
        B, T = feat.shape[:2]
        h = self.decoder_in(feat.flatten(0, 1)).view(B * T, self._cin, self._base, self._base)
        return self.decoder(h).view(B, T, self.channels, self.image_size, self.image_size)

    def forward(self, obs: Tensor, boundary: Tensor | None = None) -> TensorDict:
        want = (self.channels, self.image_size, self.image_size)
        if obs.dim() != 5 or tuple(obs.shape[2:]) != want:
            raise ValueError(f"obs must be [B, T, {want[0]}, {want[1]}, {want[2]}], got shape {tuple(obs.shape)}")
        B, T = obs.shape[:2]
        if boundary is not None and tuple(boundary.shape) != (B, T, 1):
            raise ValueError(f"boundary must be [B, T, 1] READ flags, got shape {tuple(boundary.shape)}")
        x, embed, action, is_first = self.inputs(obs)
        post, prior = self.dynamics.observe(
            embed, action, is_first, boundary=None if boundary is None else boundary.to(embed.dtype),
            pixel_view=None if self.frame_change is None else self.frame_change(x),
        )
        recon = self.decode(self.dynamics.get_feat(post))
        obs_cost = 0.5 * ((recon - x) / self.obs_std).pow(2).flatten(2).sum(-1)
        kl, m = self.dynamics.kl_loss(
            post, prior, free_bits=self.free_bits, dyn_scale=self.dyn_scale, rep_scale=self.rep_scale
        )
        read = post["boundary"]
        loss = (obs_cost + kl).mean()
        read_prob = torch.softmax(post["boundary_logit"], -1)[..., :1]  # differentiable, unlike m["read_prob"]
        if self.dynamics.boundary_grad == "local":
            loss = add_local_gradient(self, obs, loss, read=read, read_prob=read_prob, forced=boundary is not None,
                                      cost=model_cost)
        return TensorDict(
            {
                "loss": loss,
                "model_cost": obs_cost + m["kl_state"],
                "obs_cost": obs_cost,
                "kl_abs": m["kl_abs"] * read[..., 0].detach(),
                "kl_abs_raw": m["kl_abs"],
                "kl_obs": m["kl_obs"],
                "kl_mask": m["kl_boundary"],
                "boundary_kl": m["boundary_kl"],
                "boundary": read,
                "read_prob": read_prob.detach(),
                "prior_read_prob": torch.softmax(prior["boundary_logit"], -1)[..., :1].detach(),
                "seg_len": post["seg_len"],
                "seg_num": post["seg_num"],
                "recon": recon,
            },
            batch_size=[],
        )
