"""Train VTA on the Moving Shapes known-boundary dataset (Hydra entry; logic in imwm.training.vta_run).

``imwm-train-vta``, or ``python scripts/train_vta.py`` in a checkout:

    imwm-train-vta                                        # original VTA
    imwm-train-vta vta=dreamer                            # DreamerV3-integrated VTA
    imwm-train-vta vta=surprise data=dynamics             # the same, READs where its prediction fails
    imwm-train-vta vta.boundary_force_scale=0.0 train.updates=600 name=orig_f0

A bad config value is reported as one line (``imwm: error: vta.boundary_temp: ...``, exit status 2);
``IMWM_DEBUG=1`` shows the full traceback instead.
"""

import sys

import hydra
from omegaconf import DictConfig

from imwm.cli.overrides import check_command_line
from imwm.configs import CONFIG_PATH
from imwm.errors import user_errors
from imwm.training.vta_run import train


@hydra.main(config_path=CONFIG_PATH, config_name="train_vta", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():  # inside the Hydra task: Hydra would print its own traceback otherwise
        train(cfg)


def cli() -> None:
    """The ``imwm-train-vta`` console script: Hydra parses ``sys.argv`` (a command line it cannot
    compose is refused first, in one line)."""
    with user_errors():
        check_command_line(sys.argv[1:], config_name="train_vta")
    main()


if __name__ == "__main__":
    cli()
