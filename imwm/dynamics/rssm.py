"""DreamerV3's recurrent state-space model (RSSM) behind the ``Dynamics`` protocol.

Hafner et al., 2023, "Mastering Diverse Domains through World Models" (DreamerV3):

- sequence model (block GRU): ``h_t = f(h_{t-1}, z_{t-1}, a_{t-1})``
- posterior (representation): ``z_t ~ q(z_t | h_t, e_t)``, ``e_t`` the observation embedding
- prior (dynamics predictor): ``z^_t ~ p(z^_t | h_t)``
- ``z`` is ``stoch`` categoricals of ``classes`` classes, with 1% uniform mixed in (unimix).

Reused from TorchRL 0.14.1: the parameters and layers of ``RSSMPriorV3(recurrent_model=
"block_gru")`` (block GRU with RMSNorm'd deter/stoch/action projections, the 2-layer prior head)
and ``RSSMPosteriorV3(use_rms_norm=True)`` (the 1-layer posterior head); they match the
reference DreamerV3 layers. Not reused, and why:

- *unimix*: TorchRL returns raw logits and mixes only while sampling; DreamerV3 mixes the
  distribution itself, so KL, entropy and samples all see the mixed probabilities. The
  ``logits`` kept in imwm states are the mixed, normalised log-probs.
- *the time loop*: ``RSSMRolloutV3`` runs prior and posterior inside the loop and builds
  TensorDicts per step. Here the loop holds only what depends on the previous step (the GRU,
  the posterior and its sample); the prior head and its sample run once for all ``[B, T]``
  after it, and the loop's noise is drawn once. No host syncs; one TensorDict per output.
- *the gate arithmetic*: the same function as TorchRL's block GRU (tested equal), laid out so
  that its compiled kernel vectorises (:meth:`RSSMDynamics._gru_step`).

The step is written plainly, one layer call after another; ``agent.compile`` fuses the loop.
Earlier versions fused it by hand (TorchRL's GRU weights re-arranged into a few dense matmuls
per step, and the loop's weight gradients batched over time in a custom autograd Function).
Measured against this plain version, both in one process (2-core CPU, nothing else running):
the ``preset=laptop`` update 76.9 ms hand-fused vs 81.3 ms plain compiled (2 threads, median of
40), 111.8 vs 115.0 ms eager; size S eager 11.9 vs 12.4 s (1 thread). Three to six percent did
not pay for two hundred lines the compiler makes redundant (RESULTS.md, "Compiled update").

State keys: ``deter [.., deter]``, ``stoch [.., stoch*classes]`` (one-hot samples with
straight-through gradients, flattened), ``logits [.., stoch, classes]`` (unimixed log-probs).
``get_feat = cat(stoch, deter)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict
from torch import nn
from torchrl.modules.models.model_based import RSSMPosteriorV3, RSSMPriorV3

from imwm.errors import check_integer
from imwm.nn.distributions import (
    categorical_entropy,
    categorical_kl,
    straight_through_sample,
    unimix_logits,
)


class RSSMDynamics(nn.Module):
    """DreamerV3 RSSM with discrete latents; implements :class:`imwm.dynamics.Dynamics`.

    Args (match the config group ``dynamics.*``):
        deter: width of the deterministic state ``h`` (block GRU size).
        stoch: number of categorical latents.
        classes: classes per categorical.
        hidden: width of the GRU input projections and the prior/posterior hidden layers.
        unimix: uniform fraction mixed into every categorical (DreamerV3: 0.01).
        blocks: GRU blocks (``deter`` must be divisible by it).
        action_dim: action width ``A``.
        embed_dim: observation-embedding width ``E``.
        img_layers: hidden layers of the prior head (DreamerV3: 2).
        obs_layers: hidden layers of the posterior head (DreamerV3: 1).
        dyn_layers: block-linear layers inside the GRU (DreamerV3: 1).

    Example:
        >>> rssm = RSSMDynamics(deter=32, stoch=4, classes=4, hidden=16, blocks=4,
        ...                     action_dim=2, embed_dim=8)
        >>> post, prior = rssm.observe(torch.randn(3, 5, 8), torch.zeros(3, 5, 2),
        ...                            torch.zeros(3, 5, 1, dtype=torch.bool))
        >>> rssm.get_feat(post).shape
        torch.Size([3, 5, 48])
        >>> loss, metrics = rssm.kl_loss(post, prior, free_bits=1.0, dyn_scale=0.5, rep_scale=0.1)
        >>> loss.shape, metrics["kl"].shape
        (torch.Size([3, 5]), torch.Size([3, 5]))
    """

    def __init__(
        self,
        *,
        deter: int = 512,
        stoch: int = 32,
        classes: int = 32,
        hidden: int = 512,
        unimix: float = 0.01,
        blocks: int = 8,
        action_dim: int,
        embed_dim: int,
        img_layers: int = 2,
        obs_layers: int = 1,
        dyn_layers: int = 1,
    ):
        super().__init__()
        self.deter = check_integer("deter", deter)
        self.stoch = check_integer("stoch", stoch)
        self.classes = check_integer("classes", classes)
        self.hidden = check_integer("hidden", hidden)
        self.blocks = check_integer("blocks", blocks)
        self.action_dim = check_integer("action_dim", action_dim)
        self.embed_dim = check_integer("embed_dim", embed_dim)
        check_integer("img_layers", img_layers)
        check_integer("obs_layers", obs_layers)
        check_integer("dyn_layers", dyn_layers)
        if self.deter % self.blocks:
            raise ValueError(f"deter ({deter}) must be divisible by blocks ({blocks})")
        if not 0.0 <= unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {unimix}")
        self.unimix = float(unimix)
        self.stoch_dim = self.stoch * self.classes
        self.feat_dim = self.stoch_dim + self.deter

        self.prior_net = RSSMPriorV3(
            hidden_dim=self.hidden,
            rnn_hidden_dim=self.deter,
            num_categoricals=self.stoch,
            num_classes=self.classes,
            action_dim=self.action_dim,
            recurrent_model="block_gru",
            num_blocks=self.blocks,
            num_layers=dyn_layers,
            prior_num_layers=img_layers,
            unimix=self.unimix,
        )
        self.posterior_net = RSSMPosteriorV3(
            hidden_dim=self.hidden,
            num_categoricals=self.stoch,
            num_classes=self.classes,
            rnn_hidden_dim=self.deter,
            obs_embed_dim=self.embed_dim,
            use_rms_norm=True,
            num_layers=obs_layers,
            unimix=self.unimix,
        )

    # views into the TorchRL modules (properties, so the state_dict holds each parameter once)
    @property
    def _gru(self) -> nn.Module:
        return self.prior_net.rnn

    # ------------------------------------------------------------------ helpers
    def _device_dtype(self):
        param = self._gru.gates.weight
        return param.device, param.dtype

    def _gru_step(self, stoch: torch.Tensor, deter: torch.Tensor, action: torch.Tensor
                  ) -> torch.Tensor:
        """Block-GRU update ``h_t = f(h_{t-1}, z_{t-1}, a_{t-1})`` on 2-D inputs ``[N, *]``.

        TorchRL's ``_DreamerV3BlockGRU`` layers, called as they are; only the gate arithmetic is
        ours: it runs on ``[N, blocks, width]`` views and flattens the result, where TorchRL
        flattens the gates first. The gates come out of a per-block matmul (``[blocks, N,
        3 * width]`` in memory), and flattening them first turns every read into a div/mod gather
        that Inductor compiles to scalar C++ (measured 10x slower than the vectorised kernel).
        The same function as TorchRL's (tested).
        """
        gru, width = self._gru, self.deter // self.blocks
        action = action / action.detach().abs().clamp_min(1.0)  # DreamerV3: actions in [-1, 1]
        feats = torch.cat([gru.belief_projection(deter), gru.state_projection(stoch),
                           gru.action_projection(action)], -1)
        prev = deter.unflatten(-1, (self.blocks, width))
        blocks_in = torch.cat([prev, feats.unsqueeze(1).expand(-1, self.blocks, -1)], -1)
        gates = gru.gates(gru.hidden_layers(blocks_in.flatten(1)))
        gates = gates.unflatten(-1, (self.blocks, 3, width))
        reset, candidate, update = gates.unbind(-2)
        candidate = torch.tanh(torch.sigmoid(reset) * candidate)
        update = torch.sigmoid(update - 1.0)  # DreamerV3's update-gate bias of -1
        return (prev + update * (candidate - prev)).flatten(1)

    def _posterior_logits(self, deter: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        raw = self.posterior_net.obs_rnn_to_post_projector(torch.cat([deter, embed], -1))
        return unimix_logits(raw.unflatten(-1, (self.stoch, self.classes)), self.unimix)

    def _prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        raw = self.prior_net.rnn_to_prior_projector(deter)
        return unimix_logits(raw.unflatten(-1, (self.stoch, self.classes)), self.unimix)

    def _sample(self, logits: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
        return straight_through_sample(logits, uniform).flatten(-2)

    def _state(self, deter, stoch, logits, batch_size) -> TensorDict:
        return TensorDict(
            {"deter": deter, "stoch": stoch, "logits": logits}, batch_size=batch_size
        )

    def _check(self, name: str, value: torch.Tensor, shape: Sequence[int]) -> None:
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")

    # ------------------------------------------------------------------ protocol
    def initial(self, batch_size: int | Sequence[int]) -> TensorDict:
        """Zero state (DreamerV3 resets ``h`` and ``z`` to zeros); logits are uniform."""
        shape = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        device, dtype = self._device_dtype()
        return self._state(
            torch.zeros(*shape, self.deter, device=device, dtype=dtype),
            torch.zeros(*shape, self.stoch_dim, device=device, dtype=dtype),
            torch.full(
                (*shape, self.stoch, self.classes),
                -math.log(self.classes),
                device=device,
                dtype=dtype,
            ),
            shape,
        )

    def observe(
        self,
        embed: torch.Tensor,
        action: torch.Tensor,
        is_first: torch.Tensor,
        state: TensorDict | None = None,
    ) -> tuple[TensorDict, TensorDict]:
        """Posterior and prior states ``[B, T]`` for a sequence (see :class:`Dynamics`).

        ``action[:, t]`` is the action that led to observation t; it and the carried state are
        zeroed where ``is_first[:, t]``.
        """
        if embed.dim() != 3:
            raise ValueError(f"embed must be [B, T, E], got shape {tuple(embed.shape)}")
        batch, time = embed.shape[:2]
        self._check("embed", embed, (batch, time, self.embed_dim))
        self._check("action", action, (batch, time, self.action_dim))
        self._check("is_first", is_first, (batch, time, 1))
        if state is None:
            state = self.initial(batch)
        keep = (~is_first.bool()).to(embed.dtype)  # [B, T, 1]
        action = action * keep
        # the loop's noise in one draw; the prior head and its sample run once after the loop
        uniform = torch.rand(time, batch, self.stoch, device=embed.device,
                             dtype=torch.promote_types(embed.dtype, torch.float32))
        deter, stoch = state["deter"], state["stoch"]
        deters, stochs, post_logits = [], [], []
        for t in range(time):
            deter, logits, stoch = self.observe_cell(
                stoch, deter, keep[:, t], action[:, t], embed[:, t], uniform[t])
            deters.append(deter)
            stochs.append(stoch)
            post_logits.append(logits)

        deter_seq = torch.stack(deters, 1)
        posterior = self._state(
            deter_seq, torch.stack(stochs, 1), torch.stack(post_logits, 1), (batch, time)
        )
        prior_logits = self._prior_logits(deter_seq)
        prior = self._state(deter_seq, self._sample(prior_logits), prior_logits, (batch, time))
        return posterior, prior

    def observe_cell(
        self, stoch: torch.Tensor, deter: torch.Tensor, keep: torch.Tensor, action: torch.Tensor,
        embed: torch.Tensor, uniform: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of :meth:`observe`'s loop on ``[B, *]`` tensors: ``(deter, post_logits, stoch)``.

        ``keep`` ``[B, 1]`` is 0 where the step starts an episode (the carried state is zeroed),
        ``uniform`` ``[B, stoch]`` the step's sampling noise. The unit that
        ``agent.compile_scope=step`` compiles once and calls ``T`` times.
        """
        deter = self._gru_step(stoch * keep, deter * keep, action)
        logits = self._posterior_logits(deter, embed)
        return deter, logits, self._sample(logits, uniform)

    def obs_step(
        self,
        state: TensorDict,
        action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
    ) -> tuple[TensorDict, TensorDict]:
        """One filtering step for acting: ``(posterior, prior)`` with batch ``[B]``."""
        batch = embed.shape[0]
        self._check("embed", embed, (batch, self.embed_dim))
        self._check("action", action, (batch, self.action_dim))
        self._check("is_first", is_first, (batch, 1))
        keep = (~is_first.bool()).to(embed.dtype)
        deter = self._gru_step(state["stoch"] * keep, state["deter"] * keep, action * keep)
        post_logits = self._posterior_logits(deter, embed)
        prior_logits = self._prior_logits(deter)
        posterior = self._state(deter, self._sample(post_logits), post_logits, (batch,))
        prior = self._state(deter, self._sample(prior_logits), prior_logits, (batch,))
        return posterior, prior

    def img_step(self, state: TensorDict, action: torch.Tensor) -> TensorDict:
        """Prior step: ``h' = f(h, z, a)``, ``z' ~ p(z' | h')``; any leading batch shape."""
        if action.shape[-1] != self.action_dim:
            raise ValueError(
                f"action must end with action_dim={self.action_dim}, got {tuple(action.shape)}"
            )
        lead = action.shape[:-1]
        deter = self._gru_step(
            state["stoch"].reshape(-1, self.stoch_dim), state["deter"].reshape(-1, self.deter),
            action.reshape(-1, self.action_dim),
        ).reshape(*lead, self.deter)
        logits = self._prior_logits(deter)
        return self._state(deter, self._sample(logits), logits, lead)

    def get_feat(self, state: TensorDict) -> torch.Tensor:
        """``cat(stoch, deter)``, ``[..., stoch*classes + deter]``."""
        return torch.cat([state["stoch"], state["deter"]], -1)

    def kl_loss(
        self,
        posterior: TensorDict,
        prior: TensorDict,
        *,
        free_bits: float = 1.0,
        dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """DreamerV3 KL balancing with free bits, per step.

        ``dyn = max(free_bits, KL(sg(q) || p))``, ``rep = max(free_bits, KL(q || sg(p)))``, each KL
        summed over the ``stoch`` categoricals; ``loss = dyn_scale * dyn + rep_scale * rep``.

        Returns:
            ``loss [B, T]`` and detached metrics ``kl`` (raw KL(q || p)), ``dyn``, ``rep``
            (after free bits, before scaling), all ``[B, T]``.
        """
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0, got {free_bits}")
        post, pri = posterior["logits"], prior["logits"]
        if post.shape != pri.shape:
            raise ValueError(
                f"posterior logits {tuple(post.shape)} and prior logits {tuple(pri.shape)} differ"
            )
        dyn_raw = categorical_kl(post.detach(), pri).sum(-1)
        rep_raw = categorical_kl(post, pri.detach()).sum(-1)
        dyn = dyn_raw.clamp_min(free_bits)
        rep = rep_raw.clamp_min(free_bits)
        loss = dyn_scale * dyn + rep_scale * rep
        metrics = {"kl": dyn_raw.detach(), "dyn": dyn.detach(), "rep": rep.detach()}
        return loss, metrics

    def entropy(self, state: TensorDict) -> torch.Tensor:
        """Entropy of the state's (unimixed) categoricals, summed over them: ``[..., 1]``."""
        return categorical_entropy(state["logits"]).sum(-1, keepdim=True)

    def uncertainty(self, state: TensorDict) -> torch.Tensor:
        """RSSM: the categorical entropy of the state (same as :meth:`entropy`), ``[..., 1]``.

        On a prior state it measures how unsure the dynamics are about the next latent; that is
        what the adaptive intrinsic reward reads as ``Std(s')``.
        """
        return self.entropy(state)
