"""The DreamerV3 world model: encoder + dynamics + decoder, reward and continue heads.

Hafner et al., 2023 (DreamerV3). The dynamics is anything meeting :class:`imwm.dynamics.Dynamics`
(the RSSM, or VTA's hierarchical model), so the encoder, heads and loss are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from imwm.dynamics.base import Dynamics, check_dynamics
from imwm.world_model.heads import ContinueHead, RewardHead
from imwm.world_model.image import ImageDecoder, ImageEncoder
from imwm.world_model.vector import VectorDecoder, VectorEncoder


class WorldModel(TensorDictModuleBase):
    """Encodes a replay batch ``[B, T]`` and filters it through the dynamics.

    Reads ``observation`` (uint8 ``[B,T,3,64,64]`` or float ``[B,T,D]``), ``action``
    ``[B,T,A]`` (the action that led to each observation), ``is_first`` ``[B,T,1]``; writes
    ``embed`` ``[B,T,E]``, ``("posterior", *)`` and ``("prior", *)`` (dynamics state keys,
    ``[B,T]``) and ``feat`` ``[B,T,F]`` (``dynamics.get_feat(posterior)``).

    Args:
        encoder: observation -> ``[..., E]`` (attribute ``embed_dim``).
        dynamics: a :class:`~imwm.dynamics.Dynamics`.
        decoder: feat -> TensorDict, with ``loss(decoded, observation) -> [...]``.
        reward_head: feat -> two-hot logits, with ``mean`` and ``loss``.
        continue_head: feat -> logit ``[..., 1]``, with ``loss``.

    Example:
        >>> from imwm.dynamics import RSSMDynamics
        >>> wm = WorldModel.build((4,), 2, lambda embed_dim: RSSMDynamics(
        ...     deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=2,
        ...     embed_dim=embed_dim), cnn_depth=4, mlp_units=16, mlp_layers=1)
        >>> td = TensorDict({"observation": torch.randn(3, 5, 4), "action": torch.zeros(3, 5, 2),
        ...                  "is_first": torch.zeros(3, 5, 1, dtype=torch.bool)}, [3, 5])
        >>> wm(td)["feat"].shape
        torch.Size([3, 5, 24])
    """

    def __init__(
        self,
        *,
        encoder: nn.Module,
        dynamics: Dynamics,
        decoder: nn.Module,
        reward_head: nn.Module,
        continue_head: nn.Module,
    ):
        super().__init__()
        check_dynamics(dynamics)
        enc_dim = getattr(encoder, "embed_dim", None)
        dyn_dim = getattr(dynamics, "embed_dim", None)
        if enc_dim is not None and dyn_dim is not None and enc_dim != dyn_dim:
            raise ValueError(
                f"encoder.embed_dim ({enc_dim}) must equal dynamics.embed_dim ({dyn_dim})"
            )
        self.encoder = encoder
        self.dynamics = dynamics
        self.decoder = decoder
        self.reward_head = reward_head
        self.continue_head = continue_head
        state_keys = list(dynamics.initial(1).keys(True, True))
        self.in_keys = ["observation", "action", "is_first"]
        self.out_keys = (
            ["embed"]
            + [("posterior", *_as_tuple(k)) for k in state_keys]
            + [("prior", *_as_tuple(k)) for k in state_keys]
            + ["feat"]
        )

    @property
    def feat_dim(self) -> int:
        return self.dynamics.feat_dim

    def observe(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        is_first: torch.Tensor,
        state: TensorDict | None = None,
    ) -> TensorDict:
        """Tensor-level entry: returns a TensorDict ``[B, T]`` with the out_keys."""
        if action.dim() != 3:
            raise ValueError(f"action must be [B, T, A], got shape {tuple(action.shape)}")
        batch = action.shape[:2]
        embed = self.encoder(observation)
        posterior, prior = self.dynamics.observe(embed, action.float(), is_first, state)
        return TensorDict(
            {
                "embed": embed,
                "posterior": posterior,
                "prior": prior,
                "feat": self.dynamics.get_feat(posterior),
            },
            batch_size=batch,
        )

    def forward(
        self, tensordict: TensorDictBase, state: TensorDict | None = None
    ) -> TensorDictBase:
        for key in self.in_keys:
            if key not in tensordict.keys():
                raise KeyError(f"WorldModel needs key {key!r} in the input TensorDict")
        out = self.observe(
            tensordict.get("observation"),
            tensordict.get("action"),
            tensordict.get("is_first"),
            state,
        )
        tensordict.update(out)
        return tensordict

    @staticmethod
    def embed_dim_for(obs_shape: Sequence[int], *, cnn_depth: int, mlp_units: int) -> int:
        """Embedding width :meth:`build` will give for ``obs_shape`` (to size the dynamics)."""
        obs_shape = tuple(obs_shape)
        if len(obs_shape) == 3:
            return cnn_depth * 8 * (obs_shape[-1] // 16) ** 2
        if len(obs_shape) == 1:
            return mlp_units
        raise ValueError(f"obs_shape must be (C, H, W) or (D,), got {obs_shape}")

    @classmethod
    def build(
        cls,
        obs_shape: Sequence[int],
        action_dim: int,
        dynamics: Dynamics | Callable[[int], Dynamics],
        *,
        cnn_depth: int,
        mlp_units: int,
        mlp_layers: int,
        learned_std: bool = False,
        min_std: float = 0.1,
        channels_last: bool = True,
    ) -> WorldModel:
        """Pick image (``(C, H, W)``) or vector (``(D,)``) encoder/decoder and build the heads.

        Args:
            obs_shape: one observation's shape.
            action_dim: action width (checked against ``dynamics.action_dim``).
            dynamics: a Dynamics instance whose ``embed_dim`` equals
                :meth:`embed_dim_for`, or a factory ``embed_dim -> Dynamics``.
            cnn_depth, mlp_units, mlp_layers: config ``model.*``.
            learned_std: the decoder predicts a std per pixel (images) or per dim (vectors) and
                trains it with the Gaussian NLL (needed by the LEXA-style reward).
            min_std: floor of that std (> 0).
            channels_last: conv maps in channels_last memory (faster on CPU).
        """
        obs_shape = tuple(int(s) for s in obs_shape)
        if len(obs_shape) == 3:
            c, h, w = obs_shape
            if h != w:
                raise ValueError(f"image observations must be square, got obs_shape {obs_shape}")
            encoder = ImageEncoder(
                cnn_depth=cnn_depth, in_channels=c, image_size=h, channels_last=channels_last
            )
        elif len(obs_shape) == 1:
            encoder = VectorEncoder(
                obs_dim=obs_shape[0], mlp_units=mlp_units, mlp_layers=mlp_layers
            )
        else:
            raise ValueError(f"obs_shape must be (C, H, W) or (D,), got {obs_shape}")
        if not isinstance(dynamics, Dynamics):
            if not callable(dynamics):
                raise TypeError(
                    "dynamics must be a Dynamics or a factory embed_dim -> Dynamics, "
                    f"got {type(dynamics)}"
                )
            dynamics = dynamics(encoder.embed_dim)
        check_dynamics(dynamics)
        if dynamics.action_dim != action_dim:
            raise ValueError(
                f"dynamics.action_dim ({dynamics.action_dim}) != action_dim ({action_dim})"
            )
        feat_dim = dynamics.feat_dim
        if len(obs_shape) == 3:
            decoder = ImageDecoder(
                feat_dim=feat_dim,
                cnn_depth=cnn_depth,
                out_channels=obs_shape[0],
                image_size=obs_shape[1],
                learned_std=learned_std,
                min_std=min_std,
                channels_last=channels_last,
            )
        else:
            decoder = VectorDecoder(
                feat_dim=feat_dim,
                obs_dim=obs_shape[0],
                mlp_units=mlp_units,
                mlp_layers=mlp_layers,
                learned_std=learned_std,
                min_std=min_std,
            )
        return cls(
            encoder=encoder,
            dynamics=dynamics,
            decoder=decoder,
            reward_head=RewardHead(feat_dim=feat_dim, mlp_units=mlp_units, mlp_layers=mlp_layers),
            continue_head=ContinueHead(
                feat_dim=feat_dim, mlp_units=mlp_units, mlp_layers=mlp_layers
            ),
        )


def _as_tuple(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)
