"""ReDo: recycle dormant neurons (Sokar et al., ICML 2023), optional and off by default."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from imwm.diagnostics.dormant import _ACTIVATIONS, _CONVS, _LINEARS, DormantMonitor, check_tau

_NORMS = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def _is_norm(module: nn.Module) -> bool:
    # also catches custom norms such as TorchRL's _DreamerV3RMSNorm inside its RSSM
    return isinstance(module, _NORMS) or "Norm" in type(module).__name__


class _Unit:
    """The layers around one activation module inside an ``nn.Sequential``."""

    def __init__(self, incoming: nn.Module, norm: nn.Module | None, outgoing: nn.Module):
        self.incoming, self.norm, self.outgoing = incoming, norm, outgoing


def _map_units(root: nn.Module) -> dict[nn.Module, _Unit]:
    """activation module -> (incoming layer, norm, outgoing layer), for Sequential stacks.

    Only ``Linear -> [norm] -> act -> Linear`` and ``Conv -> [norm] -> act -> Conv`` are mapped:
    after a ``Flatten`` a channel owns many input columns of the next Linear, and a GRU or a
    hand-written forward has no visible order, so those neurons are measured but not recycled.
    """
    out: dict[nn.Module, _Unit] = {}
    for seq in root.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.children())
        for k, act in enumerate(children):
            if not isinstance(act, _ACTIVATIONS):
                continue
            incoming, norm = None, None
            for prev in reversed(children[:k]):
                if _is_norm(prev) and norm is None:
                    norm = prev
                elif isinstance(prev, (*_LINEARS, *_CONVS)):
                    incoming = prev
                    break
            outgoing = next((c for c in children[k + 1:] if isinstance(c, (*_LINEARS, *_CONVS))), None)
            if incoming is None or outgoing is None:
                continue
            if isinstance(incoming, _LINEARS) != isinstance(outgoing, _LINEARS):
                continue
            out[act] = _Unit(incoming, norm, outgoing)
    return out


class ReDo:
    """Every ``reset_period`` updates, re-initialise the dormant neurons measured by a monitor.

    Sokar et al. (2023), "Recycling Dormant neurons": for each neuron ``i`` with score
    ``s_i <= tau`` in the last measurement, its incoming weights (row ``i`` of the Linear, output
    channel ``i`` of the conv, plus its bias) are drawn again from the fan-in truncated normal that
    DreamerV3 (and :mod:`imwm.nn`) uses, its norm gain/bias are reset to 1/0, its outgoing weights
    (column ``i`` / input channel ``i`` of the next layer) are zeroed -- so the network's output is
    unchanged at the moment of the reset where no normalisation mixes units (with LayerNorm, the
    re-drawn rows enter the layer statistics and the other units move slightly) -- and the Adam moments (``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``) of exactly those entries are zeroed. Nothing else is touched.

    Args:
        monitor: the :class:`DormantMonitor` whose measurement decides (ReDo attaches itself to
            it, so ``monitor.step`` measures and recycles at the due updates).
        optimizers: the optimisers holding the recycled parameters (their moments are reset).
        reset_period: recycle every this many updates (>= 1).
        tau: threshold for recycling (default: the monitor's ``tau``), in [0, 1].

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> with torch.no_grad():   # unit 0 outputs tanh(0) = 0 whatever the input: dormant
        ...     _ = net[0].weight.fill_(1.0), net[0].bias.zero_(), net[0].weight[0].zero_()
        >>> redo = ReDo(DormantMonitor(net), [torch.optim.Adam(net.parameters())], reset_period=10)
        >>> x = torch.randn(8, 2); y = net(x)
        >>> _ = redo.monitor.step(10, net, x)   # due: measures this forward, then recycles
        >>> redo.monitor.pop_metrics()["dormant/redo_recycled"].item(), torch.allclose(net(x), y)
        (1.0, True)
        >>> bool(net[0].weight[0].any()), net[2].weight[0, 0].item()   # fresh input row, output cut
        (True, 0.0)
    """

    def __init__(
        self,
        monitor: DormantMonitor,
        optimizers: Iterable[torch.optim.Optimizer],
        *,
        reset_period: int = 1000,
        tau: float | None = None,
    ):
        if int(reset_period) != reset_period or reset_period < 1:
            raise ValueError(f"redo reset_period must be an integer >= 1, got {reset_period}")
        self.monitor = monitor
        self.optimizers = list(optimizers)
        self.reset_period = int(reset_period)
        self.tau = monitor.tau if tau is None else check_tau(tau)
        self._units: dict[nn.Module, _Unit] = {}
        for module in monitor.group_modules():
            self._units.update(_map_units(module))
        monitor.redo = self

    def due(self, update: int) -> bool:
        return update > 0 and update % self.reset_period == 0

    @torch.no_grad()
    def recycle(self) -> dict[str, torch.Tensor]:
        """Recycle from the monitor's last measurement; returns ``{"dormant/redo_recycled": n}``."""
        total = 0
        for _name, (scores, act) in self.monitor.last_scores.items():
            unit = self._units.get(act)
            if unit is None:
                continue
            index = torch.nonzero(scores <= self.tau).flatten()
            if index.numel() == 0:
                continue
            index = index.to(unit.incoming.weight.device)
            self._reinit_incoming(unit, index)
            self._zero_outgoing(unit, index)
            total += index.numel()
        return {"dormant/redo_recycled": torch.tensor(float(total))}

    # -- the three resets -------------------------------------------------------------------------
    def _reset_moments(self, param: torch.Tensor, dim: int, index: torch.Tensor) -> None:
        for opt in self.optimizers:
            state = opt.state.get(param)
            if not state:
                continue
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in state and state[key].shape == param.shape:
                    state[key].index_fill_(dim, index, 0.0)

    def _reinit_incoming(self, unit: _Unit, index: torch.Tensor) -> None:
        layer = unit.incoming
        transposed = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        out_dim = 1 if transposed else 0
        weight = layer.weight
        fan_in = weight[0].numel() if not transposed else weight.shape[0] * weight[0, 0].numel()
        std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
        fresh = torch.empty_like(weight.index_select(out_dim, index))
        nn.init.trunc_normal_(fresh, std=std, a=-2 * std, b=2 * std)
        weight.index_copy_(out_dim, index, fresh)
        self._reset_moments(weight, out_dim, index)
        if layer.bias is not None:
            layer.bias.index_fill_(0, index, 0.0)
            self._reset_moments(layer.bias, 0, index)
        norm = unit.norm
        if norm is not None and getattr(norm, "weight", None) is not None and norm.weight.ndim == 1:
            if norm.weight.shape[0] > int(index.max()):
                norm.weight.index_fill_(0, index, 1.0)
                self._reset_moments(norm.weight, 0, index)
                bias = getattr(norm, "bias", None)  # RMSNorm has none
                if bias is not None:
                    bias.index_fill_(0, index, 0.0)
                    self._reset_moments(bias, 0, index)

    def _zero_outgoing(self, unit: _Unit, index: torch.Tensor) -> None:
        layer = unit.outgoing
        transposed = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        in_dim = 0 if transposed else 1
        layer.weight.index_fill_(in_dim, index, 0.0)
        self._reset_moments(layer.weight, in_dim, index)
