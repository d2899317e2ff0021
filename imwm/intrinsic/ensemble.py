"""A vectorised ensemble of small MLPs (one batched matmul per layer for all members)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from imwm.errors import check_integer


class EnsembleMLP(nn.Module):
    """``K`` independent MLPs ``in_dim -> [hidden -> LayerNorm -> SiLU] x layers -> out_dim``;
    its LayerNorm has no learned gain or bias.

    Written here rather than looping over ``K`` ``nn.Sequential`` s (or using
    ``torch.func.stack_module_state``) because one ``torch.baddbmm`` per layer runs all members at
    once with plain parameters that any optimiser and ``state_dict`` handle. Members differ only by
    their initialisation (each layer initialised as ``nn.Linear`` does), as in Plan2Explore.

    Args:
        in_dim, out_dim: input and output sizes.
        ensemble_size: ``K`` >= 2 (a spread needs two members).
        hidden: hidden units (>= 1).
        layers: hidden layers (>= 1).

    Shapes: ``x [..., in_dim] -> [K, ..., out_dim]`` (the same input for every member).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> ens = EnsembleMLP(4, 3, ensemble_size=2, hidden=8, layers=1)
        >>> out = ens(torch.randn(5, 6, 4))
        >>> out.shape, out.std(0).shape   # the spread over members is Plan2Explore's disagreement
        (torch.Size([2, 5, 6, 3]), torch.Size([5, 6, 3]))
        >>> bool((out[0] != out[1]).any())   # same input, different initialisation
        True
    """

    def __init__(self, in_dim: int, out_dim: int, *, ensemble_size: int = 5, hidden: int = 256, layers: int = 2):
        super().__init__()
        for name, value, low in (("ensemble_size", ensemble_size, 2), ("hidden", hidden, 1), ("layers", layers, 1),
                                 ("in_dim", in_dim, 1), ("out_dim", out_dim, 1)):
            check_integer(name, value, low)
        self.ensemble_size, self.in_dim, self.out_dim = int(ensemble_size), int(in_dim), int(out_dim)
        sizes = [in_dim] + [hidden] * layers + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            # nn.Linear's default init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            self.weights.append(nn.Parameter(torch.empty(ensemble_size, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(ensemble_size, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"EnsembleMLP expects inputs [..., {self.in_dim}], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        h = x.reshape(1, -1, self.in_dim).expand(self.ensemble_size, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = F.silu(F.layer_norm(h, h.shape[-1:]))
        return h.reshape(self.ensemble_size, *lead, self.out_dim)
