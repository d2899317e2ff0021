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

Usage:
    python scripts/bench_update.py --size S --batch 16 --length 64 --repeats 5 --threads 2 --dynamics rssm
    python scripts/bench_update.py --size XS --batch 4 --length 16 --repeats 2 --dynamics rssm vta

Prints a markdown table (ms per update; ratio = imwm / TorchRL) and the command line used.
"""

from __future__ import annotations

import argparse
import gc
import os
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

OBS_SHAPE = (3, 64, 64)


# ----------------------------------------------------------------------------- imwm
def load_config(size: str, dynamics: str, horizon: int):
    """The ``model``, ``dynamics`` and ``agent`` groups, composed as Hydra would (interpolations resolve)."""
    from omegaconf import OmegaConf

    from imwm.configs import CONFIG_DIR

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
    return cfg


def imwm_batch(batch: int, length: int, action_dim: int, seed: int) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    action = torch.nn.functional.one_hot(torch.randint(action_dim, (batch, length), generator=g), action_dim).float()
    is_first = torch.zeros(batch, length, 1, dtype=torch.bool)
    is_first[:, 0] = True
    action[:, 0] = 0.0
    reward = (torch.rand(batch, length, 1, generator=g) < 0.05).float()
    return TensorDict(
        {
            "observation": torch.randint(0, 256, (batch, length, *OBS_SHAPE), dtype=torch.uint8, generator=g),
            "action": action,
            "reward": reward,
            "is_first": is_first,
            "is_terminal": torch.zeros(batch, length, 1, dtype=torch.bool),
            "is_last": torch.zeros(batch, length, 1, dtype=torch.bool),
        },
        [batch, length],
    )


class ImwmUpdate:
    def __init__(self, cfg, action_dim: int, batch: int, length: int, seed: int):
        from imwm.training.build_model import build_agent

        torch.manual_seed(seed)
        self.agent = build_agent(cfg, obs_shape=OBS_SHAPE, action_dim=action_dim)
        self.data = imwm_batch(batch, length, action_dim, seed)

    def __call__(self) -> None:
        metrics, _ = self.agent.train_step(self.data)
        metrics["loss_world_model"].item()  # one sync at the end, as a training loop's logging would


# ----------------------------------------------------------------------------- TorchRL
class TorchRLUpdate:
    """The same update built from TorchRL 0.14.1's DreamerV3 modules and losses."""

    def __init__(self, model: dict, action_dim: int, batch: int, length: int, horizon: int, seed: int):
        from tensordict.nn import TensorDictModule as Mod
        from tensordict.nn import TensorDictSequential as Seq
        from torchrl.data import Composite, OneHot, Unbounded
        from torchrl.envs.model_based.dreamer import DreamerEnv
        from torchrl.modules import (
            DreamerV3DiscreteActor,
            DreamerV3ImageDecoder,
            DreamerV3ImageEncoder,
            DreamerV3MLP,
            RSSMPosteriorV3,
            RSSMPriorV3,
            RSSMRolloutV3,
            SymExpTwoHot,
            WorldModelWrapper,
        )
        from torchrl.objectives import (
            DreamerV3ActorLoss,
            DreamerV3Loss,
            DreamerV3ModelLoss,
            DreamerV3ValueLoss,
            SoftUpdate,
        )
        from torchrl.objectives.utils import ValueEstimators

        torch.manual_seed(seed)
        deter, hidden = model["deter"], model["hidden"]
        stoch, classes = model["stoch"], model["classes"]
        depth, units, layers = model["cnn_depth"], model["mlp_units"], model["mlp_layers"]
        state_dim = stoch * classes
        feat = state_dim + deter
        mults = (1, 2, 4, 8)  # the paper's CNN channels: depth * (1, 2, 4, 8), as on our side
        encoder = DreamerV3ImageEncoder(OBS_SHAPE[0], depth=depth, mults=mults, kernel_size=5)
        embed = encoder.output_features(OBS_SHAPE)
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
        actor = DreamerV3DiscreteActor(feat, action_dim, depth=layers, num_cells=units, unimix=0.01)
        value = Seq(
            Mod(DreamerV3MLP(feat, 255, depth=layers, num_cells=units, outscale=0.0),
                in_keys=["belief", "state"], out_keys=["state_value_logits"]),
            Mod(SymExpTwoHot(255), in_keys=["state_value_logits"], out_keys=["state_value"]),
        )
        mb_env = DreamerEnv(world_model=imagination, prior_shape=torch.Size([state_dim]),
                            belief_shape=torch.Size([deter]))
        mb_env.action_spec = OneHot(action_dim)
        mb_env.reward_spec = Unbounded(shape=(1,))
        mb_env.state_spec = Composite(state=Unbounded(shape=(state_dim,)), belief=Unbounded(shape=(deter,)))
        mb_env.observation_spec = mb_env.state_spec.clone()

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
        self.updater = SoftUpdate(value_loss, tau=0.02)
        self.loss = DreamerV3Loss(model_loss, actor_loss, value_loss, replay_value_loss_weight=0.0)
        value_params = list(value_loss.value_model_params.flatten_keys().values())
        self.groups = [
            (list(world_model.parameters()), torch.optim.Adam(world_model.parameters(), lr=1e-4, eps=1e-8), 1000.0),
            (list(actor.parameters()), torch.optim.Adam(actor.parameters(), lr=3e-5, eps=1e-5), 100.0),
            (value_params, torch.optim.Adam(value_params, lr=3e-5, eps=1e-5), 100.0),
        ]
        self.data = self._batch(batch, length, action_dim, state_dim, deter, seed)
        self._checked = False

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
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="S", choices=["XS", "S", "M"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--actions", type=int, default=18, help="discrete actions (Atari full action space: 18)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dynamics", nargs="*", default=["rssm"], help="imwm dynamics to time (rssm, vta)")
    parser.add_argument("--no-torchrl", action="store_true", help="skip the TorchRL baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reexec", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch", "length", "horizon", "actions", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)

    runners = {}
    cfg = None
    for dyn in args.dynamics:
        cfg = load_config(args.size, dyn, args.horizon)
        runners[f"imwm ({dyn})"] = ImwmUpdate(cfg, args.actions, args.batch, args.length, args.seed)
    if not args.no_torchrl:
        model = dict(load_config(args.size, "rssm", args.horizon).model)
        runners["torchrl 0.14.1"] = TorchRLUpdate(model, args.actions, args.batch, args.length, args.horizon, args.seed)

    for name, fn in runners.items():
        for _ in range(args.warmup):
            fn()
        print(f"warmed up {name}", file=sys.stderr, flush=True)
    times = {name: [] for name in runners}
    names = list(runners)
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]  # alternate, so drift hits both sides
        for name in order:
            gc.collect()
            times[name].append(time_once(runners[name]))
        print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.0f} ms" for n in names),
              file=sys.stderr, flush=True)

    base = statistics.median(times["torchrl 0.14.1"]) if "torchrl 0.14.1" in times else None
    print()
    print(f"One DreamerV3 update, size {args.size}, batch {args.batch}x{args.length}, 64x64x3 uint8 frames, "
          f"{args.actions} actions, imagination {args.horizon} steps from {args.batch * args.length} states, "
          f"{args.threads} threads, torch {torch.__version__}, {args.repeats} timed repeats after {args.warmup} warm-up")
    print()
    print("| implementation | median ms | min ms | max ms | ratio vs torchrl |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        med = statistics.median(times[name]) * 1e3
        ratio = f"{med / (base * 1e3):.2f}x" if base else "-"
        print(f"| {name} | {med:.0f} | {min(times[name]) * 1e3:.0f} | {max(times[name]) * 1e3:.0f} | {ratio} |")
    print()
    shown = [a for a in sys.argv[1:] if a != "--no-reexec"]
    print(f"command: GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')} python scripts/bench_update.py {' '.join(shown)}")


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)  # a user error (bad config value, unknown task) is one line, exit status 2
