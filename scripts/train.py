"""Train a DreamerV3 agent (imwm) with Hydra.

Examples:
    python scripts/train.py preset=laptop                       # CartPole-v1, small model, ~10-15 min CPU
    python scripts/train.py preset=debug logger=csv             # seconds: smoke run
    python scripts/train.py preset=atari100k env.task=breakout device=cuda
    python scripts/train.py preset=atari env.task=ms_pacman replay=curious

The run folder (``run_dir``, default ``runs/${run_name}``) holds config.yaml, metrics.csv,
checkpoints/latest.pt and replay/. Running the same command again resumes from the checkpoint.
"""
import os
import sys

import hydra
from omegaconf import DictConfig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from imwm.training.loop import run

    run(cfg)


if __name__ == "__main__":
    main()
