"""Boundary figures (where VTA's READ fires) from a run folder.

``imwm-vta-viz``, or ``python scripts/vta_boundary_viz.py`` in a checkout.

The model is rebuilt from the run folder's own resolved config.yaml and checkpoint (never from
defaults); trailing key=value overrides are applied on top and printed with the values they
replace; overrides that change parameter shapes are refused.

    imwm-vta-viz --run runs/vta_original_moving_shapes --length 30
    imwm-vta-viz --run runs/atari-private_eye-vta-s0 --length 30 \
        --window reward_or_delta dynamics.boundary_force_scale=0.0
    imwm-train preset=debug dynamics=vta logger=csv run_dir=runs/debug_vta
    imwm-vta-viz --run runs/debug_vta          # vector observations

Image observations: writes boundary_grid.png (frames with a READ red / COPY blue bar),
boundary_internal.png (READ probability, seg_len / seg_num, abstract and observation KL, reward
and frame change) and boundary_fired.png (only the READ frames) into --out_dir (default
<run>/boundary_viz). Vector observations (CartPole) have no frames: boundary_timeline.png (the
observation over time above the READ / COPY bar) and boundary_internal.png are written, and one
line per frame figure says why it was left out.

A DreamerV3-style command line is accepted too: --logdir is --run; --vta_max_seg_len 50
means dynamics.max_seg_len=50 (vta.max_seg_len=50 for a train_vta.py run); --configs and --task
are answered from the run's saved config, which fixes them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from imwm.analysis.figures import WINDOWS, plot_all, skipped_figures
from imwm.analysis.report import boundary_options, collect_traces
from imwm.analysis.restore import restore_run
from imwm.analysis.script_args import parse_script_args, run_parser
from imwm.errors import run_main

#: How :func:`main`'s printed ``command:`` line starts by default (:func:`cli`: ``imwm-vta-viz``).
PROG = "python scripts/vta_boundary_viz.py"


def build_parser() -> argparse.ArgumentParser:
    p = run_parser(__doc__.split("\n\n")[0], seed_help="env seed of episode 0 (Atari)")
    p.add_argument("--length", type=int, default=30, help="steps shown")
    p.add_argument("--window", choices=WINDOWS, default="start",
                   help="start: the first steps; reward_or_delta: centred on the first reward, else the largest frame change")
    p.add_argument("--episode", type=int, default=0, help="which episode / held-out sequence to show")
    p.add_argument("--out_dir", default=None, help="default: <run>/boundary_viz")
    p.add_argument("--wandb", action="store_true",
                   help="also log the figures as images to the run's wandb run (offline by default)")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` starts the ``command:`` line."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, overrides = parse_script_args(parser, argv)
    if args.episode < 0:
        parser.error(f"--episode must be >= 0, got {args.episode}")
    restored = restore_run(args.run, overrides, checkpoint=args.checkpoint)
    opts = boundary_options(restored)
    if opts:
        print("boundary options in the restored model: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
    traces = collect_traces(restored, episodes=args.episode + 1, seed=args.seed, seq_len=args.seq_len,
                            max_steps=args.max_steps, policy=args.policy)
    trace = traces[args.episode]
    out_dir = args.out_dir or os.path.join(args.run, "boundary_viz")
    name = os.path.basename(os.path.normpath(args.run))
    paths = plot_all(trace, out_dir, length=args.length, window=args.window, title=f"{name} ep {args.episode}")
    print("command: " + prog + " " + " ".join(shlex.quote(a) for a in argv))
    for path in paths.values():
        print(f"wrote {path}")
    skipped = skipped_figures(trace)
    for figure, why in skipped.items():
        print(f"skipped {figure}: {why}")
    if args.wandb:
        from imwm.training.logging import log_video_to_run

        step = int(restored.checkpoint.get("counters", {}).get("env_steps", 0))
        images = {f"boundary/{Path(path).stem}": path for path in paths.values()}
        run_id = log_video_to_run(args.run, restored.saved_config, None, step=step, images=images,
                                  run_id=(restored.checkpoint.get("logger") or {}).get("run_id"))
        print(f"logged {len(images)} figure(s) to wandb run {run_id}")
    return {"paths": paths, "skipped": skipped, "boundary_options": opts, "restored": restored, "trace": trace}


#: Errors answered in one line ``imwm: error: ...`` (a bad run folder, flag or override), besides
#: ``imwm.errors.UserError``; ``IMWM_DEBUG=1`` shows the traceback instead.
USER_ERRORS = (ValueError, FileNotFoundError)


def cli(prog: str = "imwm-vta-viz") -> None:
    """The ``imwm-vta-viz`` console script: a user error is one line and exit status 2."""
    run_main(main, None, prog, also=USER_ERRORS)


if __name__ == "__main__":
    cli()
