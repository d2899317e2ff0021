"""Train a DreamerV3 agent (imwm) with Hydra: ``imwm-train``, or ``python scripts/train.py`` in a checkout.

Examples:
    imwm-train preset=laptop                       # CartPole-v1, small model, ~10-15 min CPU
    imwm-train preset=debug logger=csv             # seconds: smoke run
    imwm-train preset=atari100k env.task=breakout device=cuda
    imwm-train preset=atari env.task=ms_pacman replay=curious
    imwm-train -m preset=laptop seed=0,1,2 agent.entropy_coef=3e-4,1e-3   # a sweep
    imwm-train -m seed=0,1,2,3 hydra/launcher=joblib hydra.launcher.n_jobs=4

The configs ship inside the package (``imwm/configs``, read as ``pkg://imwm.configs``); run folders
are made relative to the working directory.

Each distinct configuration gets its own run folder, ``runs/<env>-<task>-<dynamics>-s<seed>-<hash>``
(``imwm.training.identity``): config.yaml, metrics.csv, checkpoints/latest.pt and replay/. Running
the same command again resumes that run (a larger ``total_env_steps`` continues it); a changed
hyperparameter starts a new folder. ``resume=auto|true|false`` (default auto) and an explicit
``run_name=...`` / ``run_dir=...`` are described in imwm/configs/config.yaml.

A bad config value is reported as one line, ``imwm: error: <full.key>: <what> (got <value>)``, with
exit status 2; ``IMWM_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) shows the full traceback instead. In a
sweep (``-m``) a job refused this way prints its line and the other jobs still run; the sweep then
ends with that line again and exit status 1 (Hydra's).
"""
import sys

import hydra
from omegaconf import DictConfig

import imwm.training.identity  # noqa: F401  (registers ${imwm.run_hash:}, used by run_name)
from imwm.cli.overrides import check_command_line
from imwm.configs import CONFIG_PATH
from imwm.errors import UserError, debug_requested, format_user_error, user_errors


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from imwm.training.loop import run

    if _in_sweep() and not debug_requested():
        # One job's refusal must not end the sweep (a sys.exit would): Hydra records the job as
        # failed, runs the others, then reports this one-line error and exits with status 1.
        from hydra.errors import CompactHydraException

        try:
            return run(cfg)  # the summary: SweepRecord reads the job's run folder from it
        except UserError as err:
            line = format_user_error(err)
            print(line, file=sys.stderr, flush=True)
            raise CompactHydraException(line) from None
    # Caught here, inside the Hydra task: Hydra would print its own traceback otherwise.
    with user_errors():
        return run(cfg)


def cli() -> None:
    """The ``imwm-train`` console script: Hydra parses ``sys.argv`` (a command line it cannot
    compose is refused first, in one line)."""
    with user_errors():
        check_command_line(sys.argv[1:], config_name="config")
    main()


if __name__ == "__main__":
    cli()
