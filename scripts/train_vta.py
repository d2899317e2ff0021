"""Train VTA on the Moving Shapes known-boundary dataset (Hydra entry; logic in imwm.training.vta_run).

    python scripts/train_vta.py                                        # original VTA
    python scripts/train_vta.py vta=dreamer                            # DreamerV3-integrated VTA
    python scripts/train_vta.py vta.boundary_force_scale=0.0 train.updates=600 name=orig_f0
"""

import hydra
from omegaconf import DictConfig

from imwm.training.vta_run import train


@hydra.main(config_path="../configs", config_name="train_vta", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
