"""Run the reference DreamerV3 (danijar/dreamerv3, JAX) on gymnasium's CartPole-v1.

Not part of imwm and not imported by it: a launcher used to measure the reference agent on the
task `make train` uses, so that imwm's learning curves have a baseline from the reference code
itself (RESULTS.md, "CartPole: the reference DreamerV3 on the same task"). The reference's
`embodied.envs.from_gym` speaks the old gym API; this file adds a gymnasium CartPole in the
reference's env interface, records how each episode ended (env step, length, terminated or
truncated, the cart position and pole angle of the last observation) to `<logdir>/episodes.jsonl`,
and otherwise runs the reference's own `dreamerv3/main.py` unchanged.

Setup (outside this repository, CPU only; the versions measured with):

    python3 -m venv refvenv
    refvenv/bin/pip install "jax[cpu]==0.4.33" chex einops "elements>=3.19.1" "granular>=0.20.3" \
        jaxtyping "ninjax>=3.5.1" "numpy<2" optax "portal>=3.5.0" "scope>=0.4.4" tqdm \
        colored_traceback gymnasium ruamel.yaml
    git clone https://github.com/danijar/dreamerv3 ref && git -C ref checkout e3f0224

Run (one seed on one core; the reference's `dmc_proprio` configuration, i.e. its smallest model
`size1m` and its recipe for vector observations, on the CPU in float32, one env, and the replay
ratio of imwm's `preset=laptop`, 512, instead of that configuration's 1024):

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    refvenv/bin/python docs/reference/dreamerv3_cartpole.py --reference ref \
        --configs dmc_proprio --task gym_cartpole --jax.platform cpu --jax.compute_dtype float32 \
        --jax.prealloc False --run.envs 1 --run.steps 5000 --run.train_ratio 512 --seed 0 \
        --logdir logs/r512_s0 --logger.outputs jsonl --run.debug True --run.usage.nvsmi False
"""
import argparse
import json
import sys


def cartpole_env_class():
    """The reference's `embodied.Env` interface around gymnasium's CartPole-v1."""
    import elements
    import embodied
    import gymnasium
    import numpy as np

    class CartPole(embodied.Env):
        def __init__(self, seed: int, log_path: str | None = None):
            self._env = gymnasium.make("CartPole-v1")
            self._seed, self._log_path = seed, log_path
            self._done, self._seeded = True, False
            self._steps = self._length = 0

        @property
        def obs_space(self):
            return {
                "state": elements.Space(np.float32, (4,)),
                "reward": elements.Space(np.float32),
                "is_first": elements.Space(bool),
                "is_last": elements.Space(bool),
                "is_terminal": elements.Space(bool),
            }

        @property
        def act_space(self):
            return {"action": elements.Space(np.int32, (), 0, 2), "reset": elements.Space(bool)}

        def step(self, action):
            if action["reset"] or self._done:
                # seeded once, so that later resets continue the env's own random stream
                obs, _ = self._env.reset(seed=None if self._seeded else self._seed)
                self._done, self._seeded, self._length = False, True, 0
                return self._obs(obs, 0.0, first=True)
            obs, reward, terminated, truncated, _ = self._env.step(int(action["action"]))
            self._done = bool(terminated or truncated)
            self._steps += 1
            self._length += 1
            if self._done:
                self._record_end(obs, bool(terminated))
            return self._obs(obs, reward, last=self._done, terminal=bool(terminated))

        def _record_end(self, obs, terminated: bool) -> None:
            if self._log_path is None:
                return
            end = {"env_step": self._steps, "length": self._length, "terminal": terminated,
                   "x": float(obs[0]), "angle": float(obs[2])}
            with open(self._log_path, "a") as f:
                f.write(json.dumps(end) + "\n")

        @staticmethod
        def _obs(obs, reward, first=False, last=False, terminal=False):
            return {"state": np.asarray(obs, np.float32), "reward": np.float32(reward),
                    "is_first": first, "is_last": last, "is_terminal": terminal}

    return CartPole


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--reference", required=True, help="a checkout of danijar/dreamerv3")
    known, rest = parser.parse_known_args()
    sys.path.insert(0, known.reference)
    from dreamerv3 import main as reference

    cartpole = cartpole_env_class()

    def make_env(config, index, **overrides):
        # only the first training env writes episode ends; the agent's spec probe steps none
        log_path = f"{config.logdir}/episodes.jsonl" if index == 0 else None
        env = cartpole(hash((config.seed, index)) % 2**31, log_path)
        return reference.wrap_env(env, config)

    reference.make_env = make_env  # main() and make_agent() look it up in their module
    reference.main(rest)


if __name__ == "__main__":
    main()
