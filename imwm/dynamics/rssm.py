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
  the posterior and its sample); the action projection and the embedding's share of the first
  posterior layer are computed for all ``[B, T]`` before the loop, and the prior head (plus its
  sample) for all ``[B, T]`` after it, each in one batched call. Noise for the loop is drawn
  once. No host syncs; one TensorDict per output.
- *the GRU arithmetic*: the same function as TorchRL's ``_DreamerV3BlockGRU`` (tested equal),
  with its weights re-arranged (:meth:`RSSMDynamics._fused_weights`) so a step is a few dense
  matmuls and never materialises the ``[N, blocks, deter/blocks + 3*hidden]`` block input, and,
  in :meth:`RSSMDynamics.observe`, with weight gradients computed once per sequence
  (:mod:`imwm.dynamics.deferred`).

Measured on this project's shared 2-core CPU (CPU time, 1 thread, size S: deter 512, 32x32
latents, batch 16x64, observe + KL + backward): TorchRL ``RSSMRolloutV3`` ~1.75-2.1 s, this
class ~1.06 s; 15 no-grad ``img_step`` from 1024 states: ``RSSMPriorV3`` 2.2-2.4 s, this 1.5-1.6 s.

State keys: ``deter [.., deter]``, ``stoch [.., stoch*classes]`` (one-hot samples with
straight-through gradients, flattened), ``logits [.., stoch, classes]`` (unimixed log-probs).
``get_feat = cat(stoch, deter)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn
from torchrl.modules.models.model_based import RSSMPosteriorV3, RSSMPriorV3

from imwm.dynamics.deferred import DeferredMatmuls
from imwm.dynamics.base import positive_int
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

    #: batch the loop's weight gradients over time (see :mod:`imwm.dynamics.deferred`)
    deferred_weight_grads: bool = True

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
        self.deter = positive_int("deter", deter)
        self.stoch = positive_int("stoch", stoch)
        self.classes = positive_int("classes", classes)
        self.hidden = positive_int("hidden", hidden)
        self.blocks = positive_int("blocks", blocks)
        self.action_dim = positive_int("action_dim", action_dim)
        self.embed_dim = positive_int("embed_dim", embed_dim)
        positive_int("img_layers", img_layers)
        positive_int("obs_layers", obs_layers)
        positive_int("dyn_layers", dyn_layers)
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

    @property
    def _post_in(self) -> nn.Linear:
        return self.posterior_net.obs_rnn_to_post_projector[0]

    def _post_rest(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.posterior_net.obs_rnn_to_post_projector[1:]:
            x = layer(x)
        return x

    # ------------------------------------------------------------------ helpers
    def _device_dtype(self):
        param = self._post_in.weight
        return param.device, param.dtype

    def _action_features(self, action: torch.Tensor) -> torch.Tensor:
        # DreamerV3 scales actions into [-1, 1] (no-op for one-hot) before projecting them
        action = action / action.detach().abs().clamp_min(1.0)
        return self._gru.action_projection(action)

    def _fused_weights(self, dense_deter: bool = True) -> dict[str, torch.Tensor]:
        """Re-arrange TorchRL's GRU weights so one step needs few, dense matmuls.

        The first block-linear layer sees ``[deter_g, features]`` for every block g; its
        ``deter`` part is a block-diagonal matrix and its ``features`` part is the same for all
        blocks, so ``x0 = deter @ block_diag(W_d) + [bp, sp] @ W_bs + act @ W_a + b0`` without
        materialising the ``[N, blocks, deter/blocks + 3*hidden]`` input (the action share is
        computed for all steps at once). ``deter`` then feeds the next step's belief projection
        and block-diagonal part through one matmul ``w_deter`` (built only with
        ``dense_deter``: worth it at small batch; a large imagination batch uses the blocks
        ``w_blocks`` in a batched matmul instead, 1/blocks of the FLOPs). Same function as
        TorchRL's ``_DreamerV3BlockGRU`` (tested); the gradients reach the original parameters.
        """
        gru, h = self._gru, self.hidden
        width = self.deter // self.blocks
        first = gru.hidden_layers[0]
        w0 = first.weight  # [blocks, width + 3 * hidden, width]
        w_feat = w0[:, width:, :].permute(1, 0, 2).reshape(3 * h, self.deter)
        weights = {
            "w_blocks": w0[:, :width, :],
            "w_bs": w_feat[: 2 * h],
            "w_a": w_feat[2 * h :],
            "b0": first.bias,
        }
        if dense_deter:
            w_bd = torch.block_diag(*w0[:, :width, :].unbind(0))
            weights["w_deter"] = torch.cat([gru.belief_projection[0].weight.t(), w_bd], 1)
        return weights

    def _core(
        self,
        w: dict[str, torch.Tensor],
        deter: torch.Tensor,
        stoch: torch.Tensor,
        deter_proj: torch.Tensor,
        action_part: torch.Tensor,
        mats: DeferredMatmuls | None = None,
    ) -> torch.Tensor:
        """One block-GRU update on 2-D inputs; ``deter_proj = deter @ w["w_deter"]`` and
        ``action_part = action_features @ w["w_a"]`` (both precomputed by the caller).

        With ``mats`` (the sequence loop) the weight matmuls go through
        :class:`~imwm.dynamics.deferred.DeferredMatmuls` and the gates use a dense
        block-diagonal matrix (one GEMM, cheap at small batch); without, plain ops (the gates'
        batched matmul keeps large imagination batches at the block FLOP count).
        """
        gru, h = self._gru, self.hidden
        lin_b, norm_b, act_b = gru.belief_projection
        lin_s, norm_s, act_s = gru.state_projection
        belief = act_b(norm_b(deter_proj[:, :h] + lin_b.bias))
        base = deter_proj[:, h:] + action_part + w["b0"]
        if mats is None:
            state = gru.state_projection(stoch)
            x = torch.addmm(base, torch.cat([belief, state], -1), w["w_bs"])
        else:
            state = act_s(norm_s(mats.mm("w_state", stoch) + lin_s.bias))
            x = base + mats.mm("w_bs", torch.cat([belief, state], -1))
        for layer in list(gru.hidden_layers)[1:]:
            x = layer(x)
        if mats is None:
            gates = gru.gates(x)
        else:
            gates = mats.mm("w_gates", x) + gru.gates.bias
        # The gate math runs on [N, blocks, width] views and flattens only the result: the gates
        # come out of a per-block matmul ([blocks, N, 3*width] in memory), and flattening them
        # first turns every read into a div/mod gather that Inductor cannot vectorise (measured:
        # the scalar kernel was 10x slower).
        width = self.deter // self.blocks
        gates = gates.unflatten(-1, (self.blocks, 3, width))
        reset, candidate, update = gates.unbind(-2)
        prev = deter.unflatten(-1, (self.blocks, width))
        candidate = torch.tanh(torch.sigmoid(reset) * candidate)
        update = torch.sigmoid(update - 1.0)  # DreamerV3's update-gate bias of -1
        return (prev + update * (candidate - prev)).flatten(-2)

    def _gru_step(
        self, stoch: torch.Tensor, deter: torch.Tensor, action_features: torch.Tensor
    ) -> torch.Tensor:
        """Block-GRU update ``h_t = f(h_{t-1}, z_{t-1}, a)``, any leading shape."""
        lead = deter.shape[:-1]
        stoch, deter = stoch.reshape(-1, self.stoch_dim), deter.reshape(-1, self.deter)
        w = self._fused_weights(dense_deter=False)
        belief_part = deter @ self._gru.belief_projection[0].weight.t()
        width = self.deter // self.blocks
        block_part = torch.bmm(deter.view(-1, self.blocks, width).transpose(0, 1), w["w_blocks"])
        out = self._core(
            w,
            deter,
            stoch,
            torch.cat([belief_part, block_part.transpose(0, 1).reshape(-1, self.deter)], 1),
            action_features.reshape(-1, action_features.shape[-1]) @ w["w_a"],
        )
        return out.reshape(*lead, self.deter)

    def _posterior_logits(self, deter: torch.Tensor, embed_part: torch.Tensor) -> torch.Tensor:
        """Unimixed posterior log-probs; ``embed_part`` = embedding's share of layer 1 (+ bias)."""
        weight = self._post_in.weight[:, : self.deter]
        raw = self._post_rest(F.linear(deter, weight) + embed_part)
        return unimix_logits(raw.unflatten(-1, (self.stoch, self.classes)), self.unimix)

    def _embed_part(self, embed: torch.Tensor) -> torch.Tensor:
        return F.linear(embed, self._post_in.weight[:, self.deter :], self._post_in.bias)

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

        # everything that does not depend on the previous step, batched over [B, T]
        w = self._fused_weights()
        action_part = (self._action_features(action * keep) @ w["w_a"]).transpose(0, 1)
        embed_part = self._embed_part(embed).transpose(0, 1)
        uniform = torch.rand(time, batch, self.stoch, device=embed.device,
                             dtype=torch.promote_types(embed.dtype, torch.float32))
        keep_t = keep.transpose(0, 1)
        # deter_t feeds the posterior now and the GRU next step: one matmul for all three
        h = self.hidden
        post_mid = list(self.posterior_net.obs_rnn_to_post_projector)[1:-1]
        post_out = self.posterior_net.obs_rnn_to_post_projector[-1]
        gru = self._gru
        mats = DeferredMatmuls(
            {
                "w_out": torch.cat([self._post_in.weight[:, : self.deter].t(), w["w_deter"]], 1),
                "w_state": gru.state_projection[0].weight.t(),
                "w_bs": w["w_bs"],
                "w_gates": torch.block_diag(*gru.gates.weight.unbind(0)),
                "w_post": post_out.weight.t(),
            },
            # the deferred backward multiplies stored float32 weights by the step's gradients,
            # which autocast makes bfloat16: under autocast the loop keeps autograd's own matmuls
            enabled=self.deferred_weight_grads
            and torch.is_grad_enabled()
            and self._post_in.weight.requires_grad
            and not torch.is_autocast_enabled(embed.device.type),
        )

        deter, stoch = mats.anchor(state["deter"], state["stoch"])
        deter_proj = mats.mm("w_out", deter)[:, h:]
        deters, stochs, post_logits = [], [], []
        for t in range(time):
            k = keep_t[t]
            deter = self._core(w, deter * k, stoch * k, deter_proj * k, action_part[t], mats)
            proj = mats.mm("w_out", deter)
            deter_proj = proj[:, h:]
            hidden = proj[:, :h] + embed_part[t]
            for layer in post_mid:
                hidden = layer(hidden)
            raw = mats.mm("w_post", hidden) + post_out.bias
            logits = unimix_logits(raw.unflatten(-1, (self.stoch, self.classes)), self.unimix)
            stoch = self._sample(logits, uniform[t])
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
        deter = self._gru_step(
            state["stoch"] * keep, state["deter"] * keep, self._action_features(action * keep)
        )
        post_logits = self._posterior_logits(deter, self._embed_part(embed))
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
        deter = self._gru_step(state["stoch"], state["deter"], self._action_features(action))
        logits = self._prior_logits(deter)
        return self._state(deter, self._sample(logits), logits, action.shape[:-1])

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
