"""Dormant-neuron ratio and a monitor that measures it on a training update.

Sokar, Agarwal, Castro & Evci, "The Dormant Neuron Phenomenon in Deep Reinforcement Learning",
ICML 2023. For a layer with neurons ``i = 1..N`` and activations ``a_i(x)`` over inputs ``x``::

    m_i = E_x |a_i(x)|            s_i = m_i / ((1/N) sum_j m_j)            dormant  <=>  s_i <= tau

and the dormant ratio is the fraction of dormant neurons. A convolutional channel is one neuron:
its ``m_i`` averages over batch *and* space. A layer whose activations are all zero has every
neuron dormant (ratio 1).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterator

import torch
from torch import nn

_ACTIVATIONS = (
    nn.SiLU, nn.ReLU, nn.ELU, nn.GELU, nn.Tanh, nn.LeakyReLU, nn.Mish, nn.Sigmoid, nn.Softplus, nn.CELU, nn.SELU,
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_LINEARS = (nn.Linear,)


def check_tau(tau: float) -> float:
    """``float(tau)`` or a ``ValueError`` if ``tau`` is outside [0, 1]."""
    tau = float(tau)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"dormant tau must be in [0, 1], got {tau}")
    return tau


def _per_neuron_sums(activations: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, int]:
    a = activations.detach().abs().float().movedim(channel_dim, -1)
    flat = a.reshape(-1, a.shape[-1])
    return flat.sum(0), flat.shape[0]


def scores_from_means(mean_abs: torch.Tensor) -> torch.Tensor:
    """``s_i = m_i / mean_j m_j`` (0 where the whole layer is 0).

    Example:
        >>> scores_from_means(torch.tensor([0.0, 1.0, 2.0, 1.0]))
        tensor([0., 1., 2., 1.])
        >>> scores_from_means(torch.zeros(3))
        tensor([0., 0., 0.])
    """
    layer_mean = mean_abs.mean()
    return torch.where(layer_mean > 0, mean_abs / layer_mean.clamp_min(torch.finfo(mean_abs.dtype).tiny), 0.0)


def neuron_scores(activations: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
    """Scores ``s_i`` of every neuron; all other dims (batch, time, space) are averaged over.

    Args:
        activations: a layer's outputs, e.g. ``[B, N]`` (dense) or ``[B, C, H, W]`` (conv).
        channel_dim: the neuron dim (``-1`` dense; ``1`` or ``-3`` for ``[B, C, H, W]``).

    Example:
        >>> a = torch.ones(8, 4); a[:, 0] = 0.0  # m = (0, 1, 1, 1), layer mean 0.75
        >>> neuron_scores(a)
        tensor([0.0000, 1.3333, 1.3333, 1.3333])
        >>> neuron_scores(torch.ones(2, 3, 5, 5), channel_dim=1)
        tensor([1., 1., 1.])
    """
    if activations.ndim < 1 or activations.numel() == 0:
        raise ValueError(f"activations must be a non-empty tensor, got shape {tuple(activations.shape)}")
    sums, count = _per_neuron_sums(activations, channel_dim)
    return scores_from_means(sums / count)


def dormant_ratio(activations: torch.Tensor, tau: float = 0.025, channel_dim: int = -1) -> torch.Tensor:
    """Fraction of dormant neurons (``s_i <= tau``) of one layer, a 0-d tensor.

    Example:
        >>> a = torch.ones(8, 4); a[:, 0] = 0.0          # one dead unit of four
        >>> dormant_ratio(a).item()
        0.25
        >>> dormant_ratio(torch.ones(2, 3, 5, 5), channel_dim=1).item()   # 3 channels, none dormant
        0.0
    """
    tau = check_tau(tau)
    return (neuron_scores(activations, channel_dim) <= tau).float().mean()


@dataclass
class _Layer:
    """Accumulates ``sum_x |a_i(x)|`` and the count of ``x`` over every call during a measurement."""

    name: str  # metric suffix, e.g. "world_rew_layer0"
    group: str  # the group it belongs to, e.g. "world", "actor", "critic"
    channel_dim: int = -1
    conv_channels: int | None = None
    module: nn.Module | None = None  # activation module (for ReDo)
    sums: torch.Tensor | None = None
    count: int = 0
    keys: tuple = field(default_factory=tuple)

    def add(self, value: torch.Tensor) -> None:
        dim = self.channel_dim
        if self.conv_channels is not None:
            # conv activations: channels-first [.., C, H, W], or channels-last if a norm permuted them
            dim = -3 if value.ndim >= 3 and value.shape[-3] == self.conv_channels else -1
        sums, count = _per_neuron_sums(value, dim)
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += count

    def scores(self) -> torch.Tensor | None:
        return None if self.sums is None else scores_from_means(self.sums / max(self.count, 1))


# Where each part lives on imwm's DreamerAgent, and the prefix of its per-layer metrics.
_WORLD_PARTS = (
    ("encoder", "world_enc_layer"),
    ("dynamics", "world_dyn_layer"),
    ("decoder", "world_dec_layer"),
    ("reward_head", "world_rew_layer"),
    ("continue_head", "world_cont_layer"),
)
_WORLD_PREFIX = dict(_WORLD_PARTS)
_DETER_KEYS = ("deter", "abs_belief", "obs_belief")  # RSSM, VTA
_STOCH_KEYS = ("stoch", "abs_stoch", "obs_stoch")


def _is_agent(model: Any) -> bool:
    return all(hasattr(model, name) for name in ("world_model", "actor", "critic"))


def _is_layer_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, nn.ModuleList))


def _conv_channels_of(module: nn.Module) -> int | None:
    """Output channels when the last conv / linear layer inside ``module`` is a conv."""
    last = None
    for sub in module.modules():
        if isinstance(sub, (*_CONVS, *_LINEARS)):
            last = sub
    return last.out_channels if isinstance(last, _CONVS) else None


def _groups_of(model: Any) -> dict[str, Any]:
    """``{group name: module | layer list | {part: module}}`` for any accepted ``model``."""
    if _is_agent(model):
        world = model.world_model
        return {
            "world": {part: getattr(world, part) for part, _ in _WORLD_PARTS if getattr(world, part, None) is not None},
            "actor": model.actor,
            "critic": model.critic,
        }
    if isinstance(model, Mapping):
        return dict(model)
    if _is_layer_list(model) or isinstance(model, nn.Sequential):
        return {"model": model}
    if isinstance(model, nn.Module):
        children = dict(model.named_children())
        return children if children else {"model": model}
    raise TypeError(
        f"DormantMonitor takes an agent (world_model, actor, critic), a dict of named groups, a module "
        f"whose children are the groups, or a list of layers; got {type(model).__name__}"
    )


def _check_group(name: Any, value: Any) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"dormant group names must be non-empty strings, got {name!r}")
    if value is None or isinstance(value, nn.Module):
        return
    items = value.values() if isinstance(value, Mapping) else value if _is_layer_list(value) else None
    if items is None or not all(item is None or isinstance(item, nn.Module) for item in items):
        raise TypeError(
            f"dormant group {name!r} must be a module, a list of layers or a dict of modules, got {type(value).__name__}"
        )


class DormantMonitor:
    """Dormant-neuron ratios of a model's named groups of layers, measured on training updates.

    Forward hooks are attached only inside :meth:`track` (or :meth:`step` when the update is due)
    and removed on exit, so the monitor costs nothing between measurements. Per neuron it keeps
    a running ``sum |a|`` and a count over every forward call of the measured code (the actor and
    critic run on imagined states, the world model on the replay batch), so no activation is stored.

    What is measured is organised in *groups*, each with its own metrics:

    - an agent (an object with ``world_model``, ``actor`` and ``critic``; the training loop's
      case) gives the groups ``world`` (its ``encoder``, ``dynamics``, ``decoder``,
      ``reward_head``, ``continue_head``; missing parts are skipped), ``actor`` and ``critic``;
    - a dict ``{name: group}`` names the groups itself;
    - a module whose children are the groups (``nn.ModuleDict`` or any module with submodules;
      an ``nn.Sequential`` or a module without children is one group, ``model``);
    - a list of layers is one group, ``model``.

    A group is a module (its layers are its activation modules -- SiLU, ReLU, ELU, ... -- in
    registration order; a module with no activation module is measured at its own output), a
    *layer list* (a list, tuple or ``nn.ModuleList``: each listed module is one layer, measured
    at its output) or a dict of named modules (``{part: module}``, measured part by part). For
    the agent's world model the encoder output (tokens) and the posterior ``deter`` / ``stoch``
    of ``dynamics.observe`` / ``obs_step`` (VTA: the beliefs / samples of both levels pooled) are
    measured too, by wrapping those two methods for the measurement. The RSSM's ``stoch`` is the
    flattened one-hot sample, so there a class that no state of the batch drew counts as a
    dormant neuron (unused codes), as measuring the sampled state implies.

    Metrics, 0-d tensors, after a measurement: ``dormant/{group}_layer{i}`` and
    ``dormant/{group}_all`` per group (``dormant/{group}_{part}_layer{i}`` for the parts of a
    dict group). ``*_all`` pool neurons (dormant count / neuron count), they do not average layer
    ratios. The agent's world model keeps its own names: ``dormant/world_tokens``,
    ``dormant/world_deter``, ``dormant/world_stoch``, ``dormant/world_penultimate`` (the decoder's
    last hidden layer, the features its output layer reads; the reward head's if there is no
    decoder), ``dormant/world_all`` and ``dormant/world_{enc,dyn,dec,rew,cont}_layer{i}``.

    Args:
        model: what to measure, in one of the forms above.
        tau: dormancy threshold in [0, 1] (Sokar et al. 2023 use 0.025).
        every: measure every ``every`` updates in :meth:`step` (>= 1).
        modules: a dict of named groups, instead of ``model``.
        groups: measure only these group names (default: all); an unknown name raises a
            ``ValueError`` listing the valid ones.

    Two ways to measure: :meth:`maybe_measure` (a separate no-grad forward of the training batch
    after the update; what the training loop calls; agents only) or :meth:`step` / :meth:`track`
    (hooks on the code you run: any model; the actor and critic are then measured on exactly the
    imagined states they trained on).

    Example:
        >>> from tensordict import TensorDict
        >>> from imwm.configs import compose_config
        >>> from imwm.training.build_model import build_agent
        >>> agent = build_agent(compose_config(["preset=debug"]), obs_shape=(4,), action_dim=2)
        >>> flags = torch.zeros(2, 8, 1, dtype=torch.bool)
        >>> batch = TensorDict({"observation": torch.randn(2, 8, 4), "action": torch.zeros(2, 8, 2),
        ...     "reward": torch.zeros(2, 8, 1), "is_first": flags, "is_terminal": flags,
        ...     "is_last": flags}, [2, 8])
        >>> monitor = DormantMonitor(agent, tau=0.025, every=1000)
        >>> metrics, signals = agent.train_step(batch)
        >>> measured = monitor.maybe_measure(batch, 1000)
        >>> sorted(measured)[:3]
        ['dormant/actor_all', 'dormant/actor_layer0', 'dormant/critic_all']
        >>> all(0.0 <= float(v) <= 1.0 for v in measured.values())
        True
        >>> monitor.maybe_measure(batch, 999)  # not a multiple of ``every``: nothing measured
        {}
        >>> # or: metrics, signals = monitor.step(update, agent.train_step, batch)

        Any model with named groups:

        >>> net = nn.ModuleDict({"encoder": nn.Sequential(nn.Linear(3, 8), nn.ReLU()),
        ...                      "head": nn.Sequential(nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 1))})
        >>> monitor = DormantMonitor(net)
        >>> with monitor.track():
        ...     _ = net["head"](net["encoder"](torch.randn(16, 3)))
        >>> sorted(monitor.metrics())
        ['dormant/encoder_all', 'dormant/encoder_layer0', 'dormant/head_all', 'dormant/head_layer0']
        >>> DormantMonitor(net, groups=["decoder"])
        Traceback (most recent call last):
        ...
        ValueError: unknown dormant group(s) ['decoder']; valid groups: ['encoder', 'head']
    """

    def __init__(
        self,
        model: Any = None,
        *,
        tau: float = 0.025,
        every: int = 1000,
        modules: Mapping | None = None,
        groups: Sequence[str] | None = None,
    ):
        self.tau = check_tau(tau)
        if int(every) != every or every < 1:
            raise ValueError(f"dormant every must be an integer >= 1, got {every}")
        self.every = int(every)
        if (model is None) == (modules is None):
            raise ValueError("DormantMonitor needs exactly one of model (positional) or modules=")
        if modules is not None and not isinstance(modules, Mapping):
            raise TypeError(
                f"DormantMonitor modules= must be a dict of named groups, got {type(modules).__name__}"
            )
        # an object with a world model but not an agent's other parts is a broken agent
        if hasattr(model, "world_model") and not _is_agent(model) and not isinstance(model, (nn.Module, Mapping)):
            raise ValueError("DormantMonitor(agent): the agent must have world_model, actor and critic attributes")
        all_groups = _groups_of(model if modules is None else modules)
        for name, value in all_groups.items():
            _check_group(name, value)
        if not all_groups:
            raise ValueError("DormantMonitor needs at least one group to measure")
        if groups is not None:
            if isinstance(groups, str):
                groups = [groups]
            unknown = [g for g in groups if g not in all_groups]
            if unknown:
                raise ValueError(f"unknown dormant group(s) {unknown}; valid groups: {sorted(all_groups)}")
            all_groups = {g: all_groups[g] for g in groups}
        self.modules = all_groups
        self.agent = model if model is not None and _is_agent(model) else None
        self.redo = None  # set by imwm.diagnostics.redo.ReDo
        self._handles: list = []
        self._patched: list = []
        self._layers: list[_Layer] = []
        self._metrics: dict[str, torch.Tensor] = {}
        self.last_scores: dict[str, tuple[torch.Tensor, nn.Module | None]] = {}

    @property
    def group_names(self) -> list[str]:
        """Names of the measured groups."""
        return list(self.modules)

    def group_modules(self) -> list[nn.Module]:
        """Every module of every group (the parts of dict groups, the layers of layer lists)."""
        out = []
        for value in self.modules.values():
            if isinstance(value, Mapping):
                out.extend(m for m in value.values() if m is not None)
            elif _is_layer_list(value):
                out.extend(m for m in value if m is not None)
            elif value is not None:
                out.append(value)
        return out

    def _world_parts(self) -> Mapping:
        world = self.modules.get("world")
        return world if isinstance(world, Mapping) else {}

    # -- structure --------------------------------------------------------------------------------
    @staticmethod
    def _activation_layers(module: nn.Module) -> list[tuple[nn.Module, int, int | None]]:
        """Activation modules in registration order, with the kind of the layer feeding them."""
        found, last = [], None
        for sub in module.modules():
            if isinstance(sub, _CONVS):
                last = sub
            elif isinstance(sub, _LINEARS):
                last = sub
            elif isinstance(sub, _ACTIVATIONS):
                conv_channels = last.out_channels if isinstance(last, _CONVS) else None
                found.append((sub, -1, conv_channels))
        return found

    def _build_layers(self) -> None:
        self._layers = []
        for group, value in self.modules.items():
            if value is None:
                continue
            if isinstance(value, Mapping):
                for part, module in value.items():
                    if module is None:
                        continue
                    prefix = _WORLD_PREFIX.get(part) if group == "world" else None
                    prefix = prefix or f"{group}_{part}_layer"
                    for i, (act, dim, ch) in enumerate(self._activation_layers(module)):
                        self._layers.append(_Layer(f"{prefix}{i}", group, dim, ch, act))
            elif _is_layer_list(value):
                for i, layer in enumerate(value):
                    if layer is not None:
                        channels = _conv_channels_of(layer)
                        self._layers.append(_Layer(f"{group}_layer{i}", group, -1, channels, layer))
            else:
                # a group without activation modules (a bare Linear, a custom block) is one layer
                found = self._activation_layers(value) or [(value, -1, _conv_channels_of(value))]
                for i, (act, dim, ch) in enumerate(found):
                    self._layers.append(_Layer(f"{group}_layer{i}", group, dim, ch, act))

    def _hook(self, layer: _Layer) -> Callable:
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.numel() > 0:
                layer.add(output)

        return hook

    # -- measuring --------------------------------------------------------------------------------
    @property
    def num_hooks(self) -> int:
        """Hooks and method wrappers currently attached (0 outside a measurement)."""
        return len(self._handles) + len(self._patched)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Attach hooks for the code inside the ``with`` block; compute the metrics on exit."""
        if self.num_hooks:
            raise RuntimeError("DormantMonitor.track() is not re-entrant")
        self._build_layers()
        tokens = _Layer("world_tokens", "world")
        deter = _Layer("world_deter", "world")
        stoch = _Layer("world_stoch", "world")
        try:
            for layer in self._layers:
                self._handles.append(layer.module.register_forward_hook(self._hook(layer)))
            encoder = self._world_parts().get("encoder")
            if encoder is not None:
                self._handles.append(encoder.register_forward_hook(self._hook(tokens)))
            dynamics = self._world_parts().get("dynamics")
            if dynamics is not None:
                self._wrap_dynamics(dynamics, deter, stoch)
            yield
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            for obj, name in self._patched:
                del obj.__dict__[name]  # back to the class method
            self._patched = []
        self._finish(tokens, deter, stoch)

    def _wrap_dynamics(self, dynamics: nn.Module, deter: _Layer, stoch: _Layer) -> None:
        def record(posterior) -> None:
            for keys, layer in ((_DETER_KEYS, deter), (_STOCH_KEYS, stoch)):
                present = [posterior.get(k) for k in keys if k in posterior.keys()]
                if present:
                    layer.add(torch.cat([p.detach() for p in present], -1))

        for name in ("observe", "obs_step"):
            original = getattr(dynamics, name, None)
            if original is None or name in dynamics.__dict__:
                continue

            def wrapped(*args, _original=original, **kwargs):
                out = _original(*args, **kwargs)
                record(out[0])
                return out

            dynamics.__dict__[name] = wrapped
            self._patched.append((dynamics, name))

    def _finish(self, tokens: _Layer, deter: _Layer, stoch: _Layer) -> None:
        metrics: dict[str, torch.Tensor] = {}
        pooled: dict[str, list[torch.Tensor]] = {}
        self.last_scores = {}
        for layer in [tokens, deter, stoch, *self._layers]:
            scores = layer.scores()
            if scores is None:
                continue  # the measured code never ran this layer
            dormant = scores <= self.tau
            metrics[f"dormant/{layer.name}"] = dormant.float().mean()
            pooled.setdefault(layer.group, []).append(dormant)
            self.last_scores[layer.name] = (scores, layer.module)
        for group, flags in pooled.items():
            if flags:
                metrics[f"dormant/{group}_all"] = torch.cat(flags).float().mean()
        for prefix in ("world_dec_layer", "world_rew_layer"):
            names = [layer.name for layer in self._layers if layer.name.startswith(prefix)]
            names = [n for n in names if f"dormant/{n}" in metrics]
            if names:
                metrics["dormant/world_penultimate"] = metrics[f"dormant/{names[-1]}"]
                break
        self._metrics = metrics

    def metrics(self) -> dict[str, torch.Tensor]:
        """Metrics of the last measurement (empty before the first)."""
        return dict(self._metrics)

    def pop_metrics(self) -> dict[str, torch.Tensor]:
        """Metrics of the last measurement, then forget them (so a loop logs each once)."""
        out, self._metrics = self._metrics, {}
        return out

    def due(self, update: int) -> bool:
        """Whether :meth:`step` measures at this update (every ``every``, or when ReDo recycles)."""
        redo_due = self.redo is not None and self.redo.due(update)
        return update % self.every == 0 or redo_due

    @torch.no_grad()
    def measure(self, batch) -> dict[str, torch.Tensor]:
        """Measure on a replay batch ``[B, T]`` with a separate forward pass (no gradients).

        Runs ``world_model(batch)`` (encoder, dynamics), the decoder, reward and continue heads on
        the posterior ``feat``, ``agent.imagine`` from the posteriors (the actor acts on imagined
        states, as in training) and the critic on the imagined ``feat``. Needs an agent; measure
        any other model with :meth:`track` or :meth:`step` around the code that runs it.
        """
        if self.agent is None:
            raise ValueError(
                "DormantMonitor.measure runs an agent's forward passes and this monitor was built on groups "
                f"{self.group_names}; wrap your own forward in monitor.track() or monitor.step() instead"
            )
        agent, world = self.agent, self.agent.world_model
        with self.track():
            out = world(batch.clone(False))
            feat = out.get("feat")
            for part in ("decoder", "reward_head", "continue_head"):
                head = getattr(world, part, None)
                if head is not None:
                    head(feat)
            if hasattr(agent, "imagine"):
                traj = agent.imagine(out.get("posterior"), batch.get("is_terminal", None))
                agent.critic(traj.get("feat"))
            else:
                agent.actor(feat)
                agent.critic(feat)
        return self.metrics()

    def maybe_measure(self, batch, update: int) -> dict[str, torch.Tensor]:
        """:meth:`measure` (and ReDo when due) if :meth:`due` at ``update``, else ``{}`` at no cost.

        This is the training loop's hook: call it after ``agent.train_step(batch)``.
        """
        if not self.due(update):
            return {}
        metrics = self.measure(batch)
        if self.redo is not None and self.redo.due(update):
            metrics.update(self.redo.recycle())
        self._metrics = {}
        return metrics

    def step(self, update: int, fn: Callable, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` (e.g. ``agent.train_step``), measured when :meth:`due`.

        When ReDo is attached and due, it recycles the dormant units right after the measurement.
        Returns what ``fn`` returns; read the measurement with :meth:`pop_metrics`.
        """
        if not self.due(update):
            return fn(*args, **kwargs)
        with self.track():
            out = fn(*args, **kwargs)
        if self.redo is not None and self.redo.due(update):
            self._metrics.update(self.redo.recycle())
        return out
