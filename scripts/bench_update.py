#!/usr/bin/env python
"""Benchmark one full DreamerV3 training update: imwm's agent vs TorchRL 0.14.1's own DreamerV3 classes.

One update = world-model loss + backward + step, imagination of ``--horizon`` steps from every
posterior state (batch x length start states), actor and critic losses + backward + steps, and
the slow-critic update. Both sides get the same sizes (DreamerV3 model size from
``imwm/configs/model/<size>.yaml``), the same uint8 64x64x3 frames, the same number of actions, run in
the same process, alternating, after warm-up. The goal is imwm <= 0.8x TorchRL's time.

The TorchRL side is assembled the way TorchRL's own DreamerV3 example does it
(sota-implementations/dreamer_v3): ``DreamerV3ImageEncoder``/``DreamerV3ImageDecoder`` (kernel 5:
they accept odd kernels only), ``RSSMPriorV3``/``RSSMPosteriorV3`` in ``RSSMRolloutV3``,
``DreamerV3MLP`` heads with ``SymExpTwoHot``, ``DreamerV3DiscreteActor``, ``DreamerV3ModelLoss``
(separate dyn/rep KL, continue loss on), ``DreamerV3ActorLoss`` (REINFORCE, imagination through
``DreamerEnv.rollout``, continuation model), ``DreamerV3ValueLoss`` (two-hot, slow-critic
regulariser 1.0, ``SoftUpdate`` tau 0.02), combined by ``DreamerV3Loss``; three Adam optimisers
with DreamerV3's learning rates and grad-norm clipping as on our side.

Variants: ``--compile false default`` times imwm eagerly and with each update phase compiled
(``agent.compile``, :mod:`imwm.agent.compile`); ``--count-ops`` adds, per variant, the ops one
update dispatches, counted with the profiler on a separate untimed update: top-level ATen calls
(each one dispatch, and on a GPU at least one kernel launch) plus, for compiled phases, the
calls of Inductor's generated kernels (CPU) or the CUDA kernels launched (GPU). ``--size laptop``
is the ``make train`` model (``preset=laptop``: CartPole's 4-dim vector observations, 2 actions,
batch 16x16); TorchRL's baseline needs frames, so it is skipped there. ``--size catch`` is
``preset=catch``'s model (64x64x3 frames; pass ``--actions 3 --length 16`` for Catch's shapes).
``--precision float32 bfloat16`` adds ``agent.precision=bfloat16`` rows, and TorchRL's update
under the same bfloat16 autocast.

Usage:
    python scripts/bench_update.py --size S --batch 16 --length 64 --repeats 5 --threads 2 --dynamics rssm
    python scripts/bench_update.py --size XS --batch 4 --length 16 --repeats 2 --dynamics rssm vta
    python scripts/bench_update.py --size catch --actions 3 --length 16 --threads 1 --dynamics vta \
        vta:boundary_grad=local,boundary_force_scale=0
    python scripts/bench_update.py --size laptop --threads 1 --compile false default --count-ops --repeats 20
    python scripts/bench_update.py --size S --device cuda --compile false default reduce-overhead --count-ops

Prints a markdown table (ms per update; ratio = imwm / TorchRL) and the command line used.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import sys
import time

# glibc returning freed memory to the OS between updates costs 1-2 s per update (measured at
# size S on CPU);
# the tunable must be in the environment before the process starts, so re-exec once.
_GLIBC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184"
if __name__ == "__main__" and "GLIBC_TUNABLES" not in os.environ and "--no-reexec" not in sys.argv:
    os.environ["GLIBC_TUNABLES"] = _GLIBC
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402

from imwm.agent.compile import COMPILE_SCOPES, parse_compile_mode  # noqa: E402

OBS_SHAPE = (3, 64, 64)
LAPTOP_OBS_SHAPE = (4,)  # preset=laptop trains on CartPole-v1
#: --size values that are presets (their own model, agent and learning rates), not model sizes
PRESET_SIZES = ("laptop", "catch")


# ----------------------------------------------------------------------------- imwm
def load_config(size: str, dynamics: str, horizon: int, compile_mode: str = "false", precision: str = "float32",
                compile_scope: str = "phase"):
    """The ``model``, ``dynamics`` and ``agent`` groups, composed as Hydra would (interpolations resolve).

    ``dynamics`` is a config name with optional ``dynamics.*`` values after a colon:
    ``vta:boundary_grad=local,boundary_force_scale=0``.
    """
    from omegaconf import OmegaConf

    from imwm.configs import CONFIG_DIR, compose_config

    dynamics, _, extra = dynamics.partition(":")
    dynamics_values = [f"dynamics.{item}" for item in extra.split(",") if item]
    if size in PRESET_SIZES:
        cfg = compose_config([f"preset={size}", f"dynamics={dynamics}", f"agent.horizon={horizon}",
                              f"agent.compile={compile_mode}", f"agent.precision={precision}",
                              f"agent.compile_scope={compile_scope}", *dynamics_values])
        return OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "dynamics", "agent")})
    groups = {"model": size, "dynamics": dynamics, "agent": "default"}
    parts = {}
    for group, option in groups.items():
        path = CONFIG_DIR / group / f"{option}.yaml"
        if not path.exists():
            valid = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
            raise ValueError(f"no config {group}={option}; valid: {valid}")
        parts[group] = OmegaConf.load(path)
    cfg = OmegaConf.create(parts)
    cfg.agent.horizon = horizon
    cfg.agent.compile = compile_mode
    cfg.agent.compile_scope = compile_scope
    cfg.agent.precision = precision
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(dynamics_values))


def imwm_batch(batch: int, length: int, action_dim: int, seed: int, obs_shape=OBS_SHAPE) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    action = torch.nn.functional.one_hot(torch.randint(action_dim, (batch, length), generator=g), action_dim).float()
    if len(obs_shape) == 3:
        observation = torch.randint(0, 256, (batch, length, *obs_shape), dtype=torch.uint8, generator=g)
    else:
        observation = torch.randn(batch, length, *obs_shape, generator=g)
    is_first = torch.zeros(batch, length, 1, dtype=torch.bool)
    is_first[:, 0] = True
    action[:, 0] = 0.0
    reward = (torch.rand(batch, length, 1, generator=g) < 0.05).float()
    return TensorDict(
        {
            "observation": observation,
            "action": action,
            "reward": reward,
            "is_first": is_first,
            "is_terminal": torch.zeros(batch, length, 1, dtype=torch.bool),
            "is_last": torch.zeros(batch, length, 1, dtype=torch.bool),
        },
        [batch, length],
    )


class ImwmUpdate:
    def __init__(self, cfg, action_dim: int, batch: int, length: int, seed: int, obs_shape=OBS_SHAPE,
                 device: str = "cpu"):
        from imwm.training.build_model import build_agent

        torch.manual_seed(seed)
        self.agent = build_agent(cfg, obs_shape=obs_shape, action_dim=action_dim, device=device)
        self.data = imwm_batch(batch, length, action_dim, seed, obs_shape).to(device)

    def __call__(self) -> None:
        metrics, _ = self.agent.train_step(self.data)
        metrics["world_model_loss"].item()  # one sync at the end, as a training loop's logging would


# ----------------------------------------------------------------------------- TorchRL
def _torchrl_rssm(model: dict, action_dim: int, embed: int):
    """The prior and posterior nets, and the rollout that runs them over a sequence."""
    from tensordict.nn import TensorDictModule as Mod
    from torchrl.modules import RSSMPosteriorV3, RSSMPriorV3, RSSMRolloutV3

    deter, hidden = model["deter"], model["hidden"]
    stoch, classes = model["stoch"], model["classes"]
    prior_net = RSSMPriorV3(
        action_shape=torch.Size([action_dim]), hidden_dim=hidden, rnn_hidden_dim=deter,
        num_categoricals=stoch, num_classes=classes, action_dim=action_dim, unimix=0.01,
        recurrent_model="block_gru", num_blocks=8, num_layers=1, prior_num_layers=2,
    )
    posterior_net = RSSMPosteriorV3(
        hidden_dim=hidden, num_categoricals=stoch, num_classes=classes, rnn_hidden_dim=deter,
        obs_embed_dim=embed, unimix=0.01, use_rms_norm=True, num_layers=1,
    )
    rollout = RSSMRolloutV3(
        Mod(prior_net, in_keys=["state", "belief", "action"],
            out_keys=[("next", "prior_logits"), ("next", "state"), ("next", "belief")]),
        Mod(posterior_net, in_keys=[("next", "belief"), ("next", "encoded_latents")],
            out_keys=[("next", "posterior_logits"), ("next", "state")]),
        reset_key="is_init",
    )
    return prior_net, rollout


def _torchrl_world_model(model: dict, action_dim: int):
    """The world model, and the nets imagination shares with it: (prior, reward head, two-hot, continue head)."""
    from tensordict.nn import TensorDictModule as Mod
    from tensordict.nn import TensorDictSequential as Seq
    from torchrl.modules import DreamerV3ImageDecoder, DreamerV3ImageEncoder, DreamerV3MLP, SymExpTwoHot

    depth, units, layers = model["cnn_depth"], model["mlp_units"], model["mlp_layers"]
    feat = model["stoch"] * model["classes"] + model["deter"]
    mults = (1, 2, 4, 8)  # the paper's CNN channels: depth * (1, 2, 4, 8), as on our side
    encoder = DreamerV3ImageEncoder(OBS_SHAPE[0], depth=depth, mults=mults, kernel_size=5)
    prior_net, rollout = _torchrl_rssm(model, action_dim, encoder.output_features(OBS_SHAPE))
    decoder = DreamerV3ImageDecoder(
        in_features=feat, image_shape=OBS_SHAPE, depth=depth, mults=mults, kernel_size=5, num_blocks=8
    )
    reward_net = DreamerV3MLP(feat, 255, depth=layers, num_cells=units, outscale=0.0)
    two_hot = SymExpTwoHot(255)
    continue_net = DreamerV3MLP(feat, 1, depth=layers, num_cells=units)
    world_model = Seq(
        Mod(encoder, in_keys=[("next", "pixels")], out_keys=[("next", "encoded_latents")]),
        rollout,
        Mod(decoder, in_keys=[("next", "state"), ("next", "belief")], out_keys=[("next", "reco_pixels")]),
        Mod(reward_net, in_keys=[("next", "belief"), ("next", "state")], out_keys=[("next", "reward_logits")]),
        Mod(two_hot, in_keys=[("next", "reward_logits")], out_keys=[("next", "reward")]),
        Mod(continue_net, in_keys=[("next", "belief"), ("next", "state")], out_keys=[("next", "continue_pred")]),
    )
    return world_model, (prior_net, reward_net, two_hot, continue_net)


def _torchrl_behaviour(model: dict, action_dim: int):
    """The actor and the two-hot critic, on the world model's features."""
    from tensordict.nn import TensorDictModule as Mod
    from tensordict.nn import TensorDictSequential as Seq
    from torchrl.modules import DreamerV3DiscreteActor, DreamerV3MLP, SymExpTwoHot

    units, layers = model["mlp_units"], model["mlp_layers"]
    feat = model["stoch"] * model["classes"] + model["deter"]
    actor = DreamerV3DiscreteActor(feat, action_dim, depth=layers, num_cells=units, unimix=0.01)
    value = Seq(
        Mod(DreamerV3MLP(feat, 255, depth=layers, num_cells=units, outscale=0.0),
            in_keys=["belief", "state"], out_keys=["state_value_logits"]),
        Mod(SymExpTwoHot(255), in_keys=["state_value_logits"], out_keys=["state_value"]),
    )
    return actor, value


def _torchrl_imagination(model: dict, action_dim: int, prior_net, reward_net, two_hot, continue_net):
    """The ``DreamerEnv`` the actor loss imagines in, and the continuation model it discounts with."""
    from tensordict.nn import TensorDictModule as Mod
    from tensordict.nn import TensorDictSequential as Seq
    from torchrl.data import Composite, OneHot, Unbounded
    from torchrl.envs.model_based.dreamer import DreamerEnv
    from torchrl.modules import WorldModelWrapper

    state_dim, deter = model["stoch"] * model["classes"], model["deter"]
    imagination = WorldModelWrapper(
        Seq(Mod(prior_net, in_keys=["state", "belief", "action"], out_keys=["_", "state", "belief"])),
        Seq(
            Mod(reward_net, in_keys=["belief", "state"], out_keys=["reward_logits"]),
            Mod(two_hot, in_keys=["reward_logits"], out_keys=["reward"]),
        ),
    )
    continuation = Seq(
        Mod(continue_net, in_keys=["belief", "state"], out_keys=["continue_logits"]),
        Mod(torch.nn.Sigmoid(), in_keys=["continue_logits"], out_keys=["continuation"]),
    )
    mb_env = DreamerEnv(world_model=imagination, prior_shape=torch.Size([state_dim]),
                        belief_shape=torch.Size([deter]))
    mb_env.action_spec = OneHot(action_dim)
    mb_env.reward_spec = Unbounded(shape=(1,))
    mb_env.state_spec = Composite(state=Unbounded(shape=(state_dim,)), belief=Unbounded(shape=(deter,)))
    mb_env.observation_spec = mb_env.state_spec.clone()
    return mb_env, continuation


def _torchrl_losses(world_model, actor, value, mb_env, continuation, horizon: int):
    """World-model, actor and value losses with DreamerV3's coefficients."""
    from torchrl.objectives import DreamerV3ActorLoss, DreamerV3ModelLoss, DreamerV3ValueLoss
    from torchrl.objectives.utils import ValueEstimators

    model_loss = DreamerV3ModelLoss(
        world_model, num_reward_bins=255, free_bits=1.0, kl_mode="separate", lambda_dynamic=0.5,
        lambda_representation=0.1, unimix=0.01, lambda_continue=1.0, reco_symlog=False,
    )
    actor_loss = DreamerV3ActorLoss(
        actor, value, mb_env, continuation_model=continuation, imagination_horizon=horizon,
        use_reinforce=True,
    )
    actor_loss.make_value_estimator(ValueEstimators.TDLambda, gamma=0.997, lmbda=0.95)
    value_loss = DreamerV3ValueLoss(value, value_loss="two_hot", actor_loss=actor_loss,
                                    slow_critic_regularization=1.0)
    return model_loss, actor_loss, value_loss


class TorchRLUpdate:
    """The same update built from TorchRL 0.14.1's DreamerV3 modules and losses."""

    def __init__(self, model: dict, action_dim: int, batch: int, length: int, horizon: int, seed: int,
                 precision: str = "float32"):
        from torchrl.objectives import DreamerV3Loss, SoftUpdate

        # weights are drawn in construction order: reordering the builders below changes them
        torch.manual_seed(seed)
        world_model, (prior_net, reward_net, two_hot, continue_net) = _torchrl_world_model(model, action_dim)
        actor, value = _torchrl_behaviour(model, action_dim)
        mb_env, continuation = _torchrl_imagination(model, action_dim, prior_net, reward_net, two_hot, continue_net)
        model_loss, actor_loss, value_loss = _torchrl_losses(world_model, actor, value, mb_env, continuation, horizon)
        self.updater = SoftUpdate(value_loss, tau=0.02)
        self.loss = DreamerV3Loss(model_loss, actor_loss, value_loss, replay_value_loss_weight=0.0)
        value_params = list(value_loss.value_model_params.flatten_keys().values())
        self.groups = [
            (list(world_model.parameters()), torch.optim.Adam(world_model.parameters(), lr=1e-4, eps=1e-8), 1000.0),
            (list(actor.parameters()), torch.optim.Adam(actor.parameters(), lr=3e-5, eps=1e-5), 100.0),
            (value_params, torch.optim.Adam(value_params, lr=3e-5, eps=1e-5), 100.0),
        ]
        state_dim = model["stoch"] * model["classes"]
        self.data = self._batch(batch, length, action_dim, state_dim, model["deter"], seed)
        self._checked = False
        # the same autocast as imwm's agent.precision=bfloat16 (forward passes only)
        self.precision = precision

    @staticmethod
    def _batch(batch, length, action_dim, state_dim, deter, seed) -> TensorDict:
        src = imwm_batch(batch, length, action_dim, seed)
        is_init = src["is_first"]
        return TensorDict(
            {
                "state": torch.zeros(batch, length, state_dim),
                "belief": torch.zeros(batch, length, deter),
                "action": src["action"],
                "is_init": is_init,
                "next": {
                    "pixels": src["observation"],
                    "reward": src["reward"],
                    "done": src["is_last"],
                    "terminated": src["is_terminal"],
                },
            },
            [batch, length],
        )

    def __call__(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            out = self.loss(self.data)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        for _, opt, _ in self.groups:
            opt.zero_grad(set_to_none=True)
        total.backward()
        if not self._checked:  # every group must really be trained
            for params, _, _ in self.groups:
                assert any(p.grad is not None for p in params), "a TorchRL parameter group got no gradient"
            self._checked = True
        for params, opt, clip in self.groups:
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
        self.updater.step()
        total.detach().item()


# ----------------------------------------------------------------------------- main
def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def count_ops(fn) -> dict[str, int]:
    """Ops of one call of ``fn``, from the profiler.

    ``aten``: ATen calls not made from inside another ATen call (what the dispatcher is asked to
    run; a composite op counts once); ``kernels``: ``aten`` plus the generated CPU kernels of
    compiled graphs, or the CUDA kernels launched when a GPU ran.
    """
    from torch.profiler import ProfilerActivity, profile

    # one untimed call first, so that one-off work stays out of the count: at size S the compiled
    # update's first call after another runner's dispatched-op count (a TorchDispatchMode) made
    # ~8,400 more ATen calls than any later call (measured; no recompile was logged)
    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    aten = generated = cuda = 0
    for event in prof.events():
        name = event.name
        if getattr(event, "device_type", None) is not None and "CUDA" in str(event.device_type):
            cuda += 1
        elif name.startswith("aten::"):
            parent = event.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            aten += parent is None
        elif "cpp_fused" in name:  # Inductor's generated CPU kernels (graph_<i>_cpp_fused_...)
            generated += 1
    counts = {"aten": aten, "kernels": cuda if torch.cuda.is_available() else aten + generated, "syncs": "-"}
    if torch.cuda.is_available():
        import warnings

        # every host-device synchronisation warns in this mode: count them
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts["syncs"] = sum("synchroniz" in str(w.message) for w in caught)
    return counts


def dispatched(fn) -> tuple[int, int]:
    """``(ops, flops)`` of one eager call of ``fn``: every ATen op that reaches the dispatcher's Python
    mode, and the multiply-add FLOPs of its matmuls and convolutions, forward and backward.

    FLOPs come from torch's own formulas (``torch.utils.flop_counter``), applied per dispatched op;
    ``FlopCounterMode`` itself is not used because its module tracker cannot walk TorchRL's
    TensorDict modules. Elementwise work is not counted: it is a small share at these sizes.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map
    from torch.utils.flop_counter import flop_registry

    shape = lambda x: x.shape if isinstance(x, torch.Tensor) else x  # noqa: E731

    class Count(TorchDispatchMode):
        ops = flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            Count.ops += 1
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.flops += formula(*tree_map(shape, args), **tree_map(shape, kwargs or {}),
                                       out_val=tree_map(shape, out))
            return out

    with Count():
        fn()
    return Count.ops, Count.flops


def dispatched_aten_ops(fn) -> int:
    """Every ATen op that reaches the dispatcher's Python mode during one call of ``fn`` (eager)."""
    return dispatched(fn)[0]


def update_flops(fn) -> int:
    """Multiply-add FLOPs of one eager call of ``fn``: every matmul and convolution (:func:`dispatched`)."""
    return dispatched(fn)[1]


def gemm_rate(device: str, repeats: int = 10) -> float:
    """FLOP/s of one large float32 matmul ([4096, 1536] x [1536, 512], the shape of a size-S head's first
    layer) on ``device`` with the current threads: the best rate the update's GEMMs can expect here."""
    a = torch.randn(4096, 1536, device=device)
    b = torch.randn(1536, 512, device=device)
    a @ b
    seconds = statistics.median(time_once(lambda: a @ b) for _ in range(repeats))
    return 2 * 4096 * 1536 * 512 / seconds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="S", choices=[*PRESET_SIZES, "1M", "XS", "S", "M"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--actions", type=int, default=18, help="discrete actions (Atari full action space: 18)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dynamics", nargs="*", default=["rssm"],
                        help="imwm dynamics to time (rssm, vta), each with optional values: vta:boundary_grad=local")
    parser.add_argument("--no-torchrl", action="store_true", help="skip the TorchRL baseline")
    parser.add_argument("--compile", nargs="*", default=["false"], help="agent.compile modes to time for imwm")
    parser.add_argument("--compile-scope", nargs="*", default=["phase"], choices=COMPILE_SCOPES,
                        help="agent.compile_scope values to time for each compiled mode")
    parser.add_argument("--count-ops", action="store_true", help="add ops dispatched / kernels per update")
    parser.add_argument("--count-flops", action="store_true",
                        help="add matmul/conv GFLOP per update (counted on eager rows; a compiled row shows its "
                             "compile=false twin's), the rate achieved, and the time those FLOPs need at this "
                             "machine's large-GEMM rate (a floor for any implementation)")
    parser.add_argument("--precision", nargs="*", default=["float32"], choices=["float32", "bfloat16"],
                        help="agent.precision values to time (TorchRL's update runs under the same autocast)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reexec", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch", "length", "horizon", "actions", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    from imwm.training.config import check_device

    check_device(args.device, key="--device")  # no CUDA here: one line, not a traceback from deep in a model
    return args


def build_runners(args: argparse.Namespace, modes: list[str]) -> tuple[dict, dict]:
    """One update callable per row, by row name, and the precision each row runs at."""
    obs_shape = LAPTOP_OBS_SHAPE if args.size == "laptop" else OBS_SHAPE
    runners, precision_of = {}, {}
    show_precision = args.precision != ["float32"]  # row names carry it only when asked for
    for precision in args.precision:
        tag = f", {precision}" if show_precision else ""
        for dyn in args.dynamics:
            for mode, scope in [(m, s) for m in modes for s in (["phase"] if m == "false" else args.compile_scope)]:
                cfg = load_config(args.size, dyn, args.horizon, mode, precision, scope)
                name = f"imwm ({dyn}{tag})" if modes == ["false"] else f"imwm ({dyn}, compile={mode}{tag})"
                if scope != "phase":
                    name = name[:-1] + f", scope={scope})"
                runners[name] = ImwmUpdate(cfg, args.actions, args.batch, args.length, args.seed, obs_shape, args.device)
                precision_of[name] = precision
        if not args.no_torchrl and args.size not in PRESET_SIZES:
            model = dict(load_config(args.size, "rssm", args.horizon).model)
            name = "torchrl 0.14.1" + (f" ({precision})" if show_precision else "")
            runners[name] = TorchRLUpdate(model, args.actions, args.batch, args.length, args.horizon, args.seed, precision)
            precision_of[name] = precision
    return runners, precision_of


def warm_up(runners: dict, warmup: int) -> dict[str, float]:
    """Run each update ``warmup`` times (compiled ones at least once); returns the compiled rows' seconds."""
    compile_s = {}
    for name, fn in runners.items():
        start = time.perf_counter()
        for _ in range(max(warmup, 1 if "compile=" in name else 0)):
            fn()
        if "compile=" in name and "compile=false" not in name:
            compile_s[name] = time.perf_counter() - start
            if not fn.agent.compiled:
                print(f"warning: {name} fell back to eager", file=sys.stderr, flush=True)
        print(f"warmed up {name}", file=sys.stderr, flush=True)
    return compile_s


def is_eager(name: str) -> bool:
    return "compile=" not in name or "compile=false" in name


def count_all_ops(runners: dict) -> dict[str, dict]:
    ops = {}
    for name, fn in runners.items():
        ops[name] = count_ops(fn)
        if is_eager(name):
            ops[name]["dispatched"] = dispatched_aten_ops(fn)
    return ops


def eager_twin(name: str) -> str:
    """The row name of the eager update that a compiled row compiles: ``compile=false``, no scope."""
    return re.sub(r", scope=[^,)]+", "", re.sub(r"compile=[^,)]+", "compile=false", name))


def count_all_flops(runners: dict, device: str) -> dict:
    """GFLOP per update of each eager row (compiled rows do the same arithmetic), and the GEMM rate."""
    flops = {name: update_flops(fn) / 1e9 for name, fn in runners.items() if is_eager(name)}
    for name in runners:  # a compiled row does the arithmetic of its eager twin
        flops.setdefault(name, flops.get(eager_twin(name)))
    return {"gflop": flops, "rate": gemm_rate(device) / 1e9}


def time_runners(runners: dict, repeats: int) -> dict[str, list[float]]:
    times = {name: [] for name in runners}
    names = list(runners)
    for rep in range(repeats):
        order = names if rep % 2 == 0 else names[::-1]  # alternate, so drift hits both sides
        for name in order:
            gc.collect()
            times[name].append(time_once(runners[name]))
        print(f"repeat {rep + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.0f} ms" for n in names),
              file=sys.stderr, flush=True)
    return times


def print_report(args: argparse.Namespace, modes: list[str], precision_of: dict, times: dict, compile_s: dict,
                 ops: dict, flops: dict | None = None) -> None:
    """The settings line, the markdown table, and the command line that reproduces it."""
    names = list(times)
    # each row against TorchRL's update at the same precision
    base = {precision_of[n]: statistics.median(times[n]) for n in names if n.startswith("torchrl")}
    print()
    frames = "CartPole 4-dim vector observations" if args.size == "laptop" else "64x64x3 uint8 frames"
    print(f"One DreamerV3 update, size {args.size}, batch {args.batch}x{args.length}, {frames}, {args.device}, "
          f"{args.actions} actions, imagination {args.horizon} steps from {args.batch * args.length} states, "
          f"{args.threads} threads, torch {torch.__version__}, {args.repeats} timed repeats after {args.warmup} warm-up")
    print()
    eager = next((n for n in names if "compile=false" in n), None)
    compiled = len(modes) > 1 or modes != ["false"]
    extra = ["compile s", "ratio vs eager"] if compiled else []
    if args.count_ops:
        extra += ["ATen ops dispatched", "top-level ATen calls", "kernels", "host syncs"]
    if flops:
        extra += ["GFLOP", "GFLOP/s", "floor ms", "floor vs torchrl"]
    mixed = len(args.precision) > 1 and "float32" in base
    if mixed:  # also every row against TorchRL's float32 update
        extra.insert(0, "ratio vs torchrl float32")
    # "ratio vs torchrl": against TorchRL's update at the row's own precision
    print("| implementation | median ms | min ms | max ms | ratio vs torchrl |" + "".join(f" {c} |" for c in extra))
    print("|---|---:|---:|---:|---:|" + "---:|" * len(extra))
    for name in names:
        med = statistics.median(times[name]) * 1e3
        ref = base.get(precision_of[name])
        ratio = f"{med / (ref * 1e3):.2f}x" if ref else "-"
        cells = [f"{med / (base['float32'] * 1e3):.2f}x"] if mixed else []
        if compiled:
            cells.append(f"{compile_s[name]:.1f}" if name in compile_s else "-")
            cells.append(f"{med / (statistics.median(times[eager]) * 1e3):.2f}x" if eager and name.startswith("imwm") else "-")
        if args.count_ops:
            cells += [str(ops[name].get("dispatched", "-")), str(ops[name]["aten"]), str(ops[name]["kernels"]),
                      str(ops[name]["syncs"])]
        if flops:
            cells += flop_cells(flops["gflop"].get(name), med, flops["rate"], ref)
        print(f"| {name} | {med:.0f} | {min(times[name]) * 1e3:.0f} | {max(times[name]) * 1e3:.0f} | {ratio} |"
              + "".join(f" {c} |" for c in cells))
    if flops:
        print(f"\nfloor ms: the row's matmul/conv GFLOP at this machine's large-GEMM rate, "
              f"{flops['rate']:.0f} GFLOP/s ([4096, 1536] x [1536, 512], float32, {args.threads} threads)")
    print()
    shown = [a for a in sys.argv[1:] if a != "--no-reexec"]
    print(f"command: GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')} python scripts/bench_update.py {' '.join(shown)}")


def flop_cells(gflop: float | None, med_ms: float, rate: float, ref_s: float | None) -> list[str]:
    """GFLOP, the rate achieved, and the floor (ms, and against TorchRL's median) for one row."""
    if gflop is None:
        return ["-"] * 4
    floor_ms = gflop / rate * 1e3
    return [f"{gflop:.4g}", f"{gflop / med_ms * 1e3:.3g}", f"{floor_ms:.1f}",
            f"{floor_ms / (ref_s * 1e3):.2f}x" if ref_s else "-"]


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    modes = [parse_compile_mode(m) for m in args.compile]
    if not args.device.startswith("cuda"):  # CUDA kernels are profiled anyway
        import torch._inductor.config as inductor_config

        # generated CPU kernels announce themselves to the profiler (for --count-ops)
        inductor_config.cpp.enable_kernel_profile = args.count_ops
    runners, precision_of = build_runners(args, modes)
    compile_s = warm_up(runners, args.warmup)
    ops = count_all_ops(runners) if args.count_ops else {}
    flops = count_all_flops(runners, args.device) if args.count_flops else None
    times = time_runners(runners, args.repeats)
    print_report(args, modes, precision_of, times, compile_s, ops, flops)


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)  # a user error (bad config value, unknown task) is one line, exit status 2
