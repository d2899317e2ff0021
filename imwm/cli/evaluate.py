"""Evaluate a trained run: return statistics over N episodes and a video of the first one.

Loads ``<run>/checkpoints/latest.pt`` (``previous.pt`` if the latest does not load) and the config
saved in it, rebuilds the env and the agent (any dynamics, any intrinsic reward), plays one
episode per env, prints the return mean and std, and writes a video of episode 1: MP4 when
imageio-ffmpeg is installed, else GIF (Pillow). Image envs (Atari) film their observations;
CartPole is rendered by gymnasium (with pygame) or drawn from its observations; other
vector-observation envs have no video, and the script says why.

Examples (``imwm-eval``, or ``python scripts/evaluate.py`` in a checkout):
    imwm-eval --run runs/cartpole-CartPole-v1-rssm-s0
    imwm-eval --run runs/atari-breakout-rssm-s0 --episodes 10 --mode sample --video ep.mp4
    imwm-eval --logdir runs/x --no-video --json eval.json
    imwm-eval --run runs/x --wandb      # also log video + stats to the run's wandb (offline)
    imwm-eval --run runs/x --terminals  # also: the continue head at the run's terminals, by cause

A user error (no such run, no loadable checkpoint, bad option) is one line, ``imwm: error: ...``,
exit status 2; ``IMWM_DEBUG=1`` shows the traceback.
"""
import argparse

from imwm.errors import run_main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--run", "--logdir", dest="run", required=True, help="the run folder (imwm-train's run_dir)")
    p.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    p.add_argument("--mode", choices=("greedy", "sample"), default="greedy",
                   help="greedy: the most likely action (as training's evaluation); sample: sample it")
    p.add_argument("--seed", type=int, default=None, help="env/torch seed (default: run seed + 10000)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap per episode (default: the run's eval_max_steps)")
    video = p.add_mutually_exclusive_group()
    video.add_argument("--video", default=None,
                       help="video file, .gif or .mp4 (default: <run>/videos/eval-<env_step>-<mode>.mp4|.gif)")
    video.add_argument("--no-video", action="store_true", help="no video")
    p.add_argument("--fps", type=float, default=None, help="video frame rate (default: the env's)")
    p.add_argument("--scale", type=int, default=None,
                   help="upscale factor of the frames (default: image observations to 256 pixels)")
    p.add_argument("--max-frames", type=int, default=1000, help="frames filmed at most (default 1000)")
    p.add_argument("--wandb", action="store_true",
                   help="log the video and stats to the run's wandb run "
                        "(logger.mode / WANDB_MODE; offline by default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    p.add_argument("--terminals", action="store_true",
                   help="also report the continue head's probability over the run's replay, at "
                        "non-terminal records and at terminal ones by cause (imwm.analysis.terminals)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from imwm.analysis.play import evaluate_run

    if args.threads:
        torch.set_num_threads(args.threads)
    video = False if args.no_video else (args.video or True)
    return evaluate_run(args.run, episodes=args.episodes, mode=args.mode, seed=args.seed,
                        max_steps=args.max_steps, video=video, fps=args.fps, scale=args.scale,
                        max_frames=args.max_frames, wandb=args.wandb, device=args.device, json_path=args.json,
                        terminals=args.terminals)


def cli() -> None:
    """The ``imwm-eval`` console script: a user error is one line and exit status 2."""
    run_main(main)


if __name__ == "__main__":
    cli()
