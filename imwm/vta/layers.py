"""VTA layers in two flavours: ``"original"`` (Kim et al. 2019) and ``"dreamer"`` (DreamerV3-integrated).

| layer | original | dreamer |
|---|---|---|
| LatentDistribution | Linear -> ELU; std = sigmoid; returns ``Normal`` | Linear -> LayerNorm -> SiLU; std = softplus + min_std; returns TensorDict(mean, std) |
| PriorBoundaryDetector | Linear(in, 2) | Linear -> LayerNorm -> SiLU -> Linear(2) |
| PostBoundaryDetector | [Conv1d(k=3) -> BatchNorm -> ELU] x L -> Conv1d(k=1, 2) | [Conv1d(k=3) -> LayerNorm -> SiLU] x L -> Conv1d(k=1, 2) |

The dreamer post-boundary detector uses LayerNorm over channels instead of BatchNorm: a
BatchNorm over RL replay slices would mix statistics across sequences and behave differently in
``train()``/``eval()``, which DreamerV3 avoids everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn
from torch.distributions import Normal

from imwm.errors import check_bool
from imwm.nn.norm import ChannelLayerNorm

FLAVOURS = ("original", "dreamer")

__all__ = [
    "FLAVOURS", "DETECTOR_NORMS", "LatentDistribution", "PriorBoundaryDetector", "PostBoundaryDetector",
    "ChannelLayerNorm", "gaussian_kl", "gaussian_kl_parts",
]


def _check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")


def _check_last_dim(x: Tensor, size: int, name: str) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have last dim {size}, got shape {tuple(x.shape)}")


def gaussian_kl(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """``KL(N(mean_q, std_q) || N(mean_p, std_p))`` summed over the last dim (diagonal Gaussians).

    Example:
        >>> zero, one = torch.zeros(2), torch.ones(2)
        >>> gaussian_kl(zero, one, zero, one).item()
        0.0
        >>> gaussian_kl(one, one, zero, one).item()  # 0.5 per dim for a unit shift of the mean
        1.0
        >>> round(gaussian_kl(zero, 2 * one, zero, one).item(), 4)  # 2 * 0.5 (4 - 1 - log 4)
        1.6137
    """
    shift, spread = gaussian_kl_parts(mean_q, std_q, mean_p, std_p)
    return shift + spread


def gaussian_kl_parts(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> tuple[Tensor, Tensor]:
    """The two parts of :func:`gaussian_kl`, each summed over the last dim: ``shift``
    ``0.5 * sum ((mean_q - mean_p) / std_p)^2`` (the means differ) and ``spread``
    ``0.5 * sum (r - 1 - log r)``, ``r = (std_q / std_p)^2`` (the widths differ).

    Example:
        >>> zero, one = torch.zeros(2), torch.ones(2)
        >>> [round(x.item(), 4) for x in gaussian_kl_parts(one, 2 * one, zero, one)]
        [1.0, 1.6137]
    """
    var_ratio = (std_q / std_p).pow(2)
    shift = 0.5 * ((mean_q - mean_p) / std_p).pow(2).sum(-1)
    return shift, 0.5 * (var_ratio - 1.0 - var_ratio.log()).sum(-1)


class LatentDistribution(nn.Module):
    """Diagonal Gaussian head ``feat -> (mean, std)`` for a latent of size ``latent_dim``.

    Original: ``h = ELU(Linear(feat))``, ``std = sigmoid(Linear(h))``; ``forward`` returns a
    ``torch.distributions.Normal``. Dreamer: ``h = SiLU(LayerNorm(Linear(feat)))``,
    ``std = softplus(Linear(h)) + min_std``; ``forward`` returns ``TensorDict(mean=..., std=...)``.
    :meth:`mean_std` returns the tensors for either flavour (what the models use internally).

    Example:
        >>> ld = LatentDistribution(8, 4, hidden_dim=16, flavour="dreamer", min_std=0.1)
        >>> td = ld(torch.zeros(3, 8)); td["std"].min() >= 0.1
        tensor(True)
    """

    def __init__(self, in_dim: int, latent_dim: int, *, hidden_dim: int, flavour: str = "dreamer", min_std: float = 0.1):
        super().__init__()
        _check_flavour(flavour)
        if min_std < 0:
            raise ValueError(f"min_std must be >= 0, got {min_std!r}")
        self.flavour, self.in_dim, self.latent_dim, self.min_std = flavour, in_dim, latent_dim, float(min_std)
        if flavour == "original":
            self.hidden = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ELU())
        else:
            self.hidden = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.SiLU())
        self.mean = nn.Linear(hidden_dim, latent_dim)
        self.std = nn.Linear(hidden_dim, latent_dim)

    def mean_std(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        _check_last_dim(feat, self.in_dim, "LatentDistribution input")
        h = self.hidden(feat)
        if self.flavour == "original":
            std = torch.sigmoid(self.std(h))
        else:
            std = F.softplus(self.std(h)) + self.min_std
        # float32 distributions even when the layers ran under bfloat16 autocast
        return self.mean(h).float(), std.float()

    def forward(self, feat: Tensor):
        mean, std = self.mean_std(feat)
        if self.flavour == "original":
            return Normal(mean, std)
        return TensorDict({"mean": mean, "std": std}, batch_size=feat.shape[:-1])


class PriorBoundaryDetector(nn.Module):
    """Prior boundary logits ``[..., 2]`` (READ, COPY) from a state feature.

    Original: ``Linear(in_dim, 2)`` (linear decision boundary); dreamer:
    ``Linear -> LayerNorm -> SiLU -> Linear(2)``.

    Example:
        >>> det = PriorBoundaryDetector(8, hidden_dim=16)
        >>> det(torch.zeros(3, 5, 8)).shape
        torch.Size([3, 5, 2])
        >>> PriorBoundaryDetector(8, flavour="original").net
        Linear(in_features=8, out_features=2, bias=True)
    """

    def __init__(self, in_dim: int, *, hidden_dim: int = 256, flavour: str = "dreamer"):
        super().__init__()
        _check_flavour(flavour)
        self.flavour, self.in_dim = flavour, in_dim
        if flavour == "original":
            self.net = nn.Linear(in_dim, 2)
        else:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 2)
            )

    def forward(self, feat: Tensor) -> Tensor:
        _check_last_dim(feat, self.in_dim, "PriorBoundaryDetector input")
        return self.net(feat).float()


#: normalisations of the posterior boundary detector's blocks (``boundary_norm=``)
DETECTOR_NORMS = ("layer", "batch")


class PostBoundaryDetector(nn.Module):
    """Posterior boundary logits for a whole sequence in one pass: 1-D convolutions over time.

    ``[B, T, E] -> [B, T, 2]``. ``num_layers`` blocks ``Conv1d(k=3, padding=1) -> norm -> act``
    then ``Conv1d(k=1) -> 2``. Each block sees one step into the past and one into the future, so
    the logits at ``t`` depend on ``embed[t - L : t + L + 1]``. The ends are padded by repeating
    the first / last step ("nothing changes beyond the window"): with zero padding the last
    step of every sequence saw an all-zero "next frame", and trained models put their lowest
    P(READ) there whatever happened (on our PrivateEye runs the AUC of P(READ) for episode
    ends was 0.0).

    With ``diff=True`` each step's input is ``cat(embed_t, embed_t - embed_{t-1})`` (zero change at
    ``t = 0``). A convolution could form the difference itself, but trained on the true boundaries of
    ``dynamics`` videos (a moving object turns) the same detector reached a held-out AUC of 0.87
    with the difference given against 0.77 without it, after 3,000 supervised steps on a trained
    model's embeddings: a change of motion is a difference of differences, and the given first
    difference leaves one for the convolution to find.

    With ``causal=True`` every block looks two steps back and none ahead (replicate padding on the
    left only), so the logits at ``t`` depend on ``embed[t - 2L : t + 1]`` (one step more with
    ``diff``) and not on later frames; with the ``original`` flavour this holds in eval mode (in
    training its BatchNorm statistics mix all steps). A centred detector sees a change at ``t``
    from ``t - 1`` as well, and trained models put many READs there: with the local boundary
    gradient on ``moving_shapes`` about half of them, at steps where the generative model had
    learned to make the early READ cheap (RESULTS.md, "VTA: where READs sit…"). A causal detector's
    READ probability cannot rise before the first frame of a new segment is seen, as for an
    agent that filters online.

    ``norm`` picks each block's normalisation: ``"batch"`` (``BatchNorm1d``, per channel over the
    batch and time; the original flavour's) or ``"layer"`` (a LayerNorm over channels at each step;
    the dreamer flavour's); ``None`` takes the flavour's. Batch normalisation removes each hidden
    channel's offset over the steps, so a growing offset cannot swamp what varies with the input.
    With the layer norm, trained dreamer-variant detectors grew such offsets and nearly lost their
    dependence on the input: on ``moving_shapes`` the spread of their READ log-odds over held-out
    steps fell from 0.35–0.48 at initialisation to 0.02–0.09 by 4,000 updates; with batch norm it
    was 0.33–1.53 at 4,000 updates, and one seed of three learned the changes (RESULTS.md, "VTA's
    dreamer variant with the causal detector…").
    In training mode a batch-normalised detector's output at ``t`` also depends on the other
    steps of the batch through the statistics, so it is causal only in eval mode.

    Example:
        >>> det = PostBoundaryDetector(16, hidden_dim=32, num_layers=2, flavour="dreamer", diff=True)
        >>> det(torch.randn(4, 10, 16)).shape
        torch.Size([4, 10, 2])
        >>> causal = PostBoundaryDetector(16, hidden_dim=32, num_layers=2, causal=True).eval()
        >>> x = torch.randn(1, 10, 16); y = x.clone(); y[:, 6:] += 1.0  # change the future of step 5
        >>> torch.equal(causal(x)[:, :6], causal(y)[:, :6])
        True
    """

    def __init__(self, in_dim: int, *, hidden_dim: int = 256, num_layers: int = 2, flavour: str = "dreamer",
                 diff: bool = False, causal: bool = False, norm: str | None = None):
        super().__init__()
        _check_flavour(flavour)
        norm = {"original": "batch", "dreamer": "layer"}[flavour] if norm is None else norm
        if norm not in DETECTOR_NORMS:
            raise ValueError(f"boundary_norm must be one of {list(DETECTOR_NORMS)}, got {norm!r}")
        if num_layers < 1:
            raise ValueError(f"post-boundary num_layers must be >= 1, got {num_layers!r}")
        check_bool("boundary_diff", diff)
        check_bool("boundary_causal", causal)
        self.flavour, self.in_dim, self.hidden_dim, self.num_layers = flavour, in_dim, hidden_dim, num_layers
        self.diff, self.causal = bool(diff), bool(causal)
        layers: list[nn.Module] = []
        channels = 2 * in_dim if diff else in_dim
        for _ in range(num_layers):
            if causal:
                layers += [nn.ReplicationPad1d((2, 0)), nn.Conv1d(channels, hidden_dim, kernel_size=3)]
            else:
                layers.append(nn.Conv1d(channels, hidden_dim, kernel_size=3, padding=1, padding_mode="replicate"))
            layers.append(nn.BatchNorm1d(hidden_dim) if norm == "batch" else ChannelLayerNorm(hidden_dim))
            layers.append(nn.ELU() if flavour == "original" else nn.SiLU())
            channels = hidden_dim
        layers.append(nn.Conv1d(channels, 2, kernel_size=1))
        self.net = nn.Sequential(*layers)

    @property
    def context(self) -> int:
        """Steps of future context each output sees (0 when causal; it sees ``2 * num_layers`` back)."""
        return 0 if self.causal else self.num_layers

    def forward(self, embed: Tensor) -> Tensor:
        if embed.dim() != 3:
            raise ValueError(f"PostBoundaryDetector expects embed [B, T, E], got shape {tuple(embed.shape)}")
        _check_last_dim(embed, self.in_dim, "PostBoundaryDetector embed")
        if self.diff:
            previous = torch.cat([embed[:, :1], embed[:, :-1]], 1)
            embed = torch.cat([embed, embed - previous], -1)
        return self.net(embed.transpose(1, 2)).transpose(1, 2).float()
