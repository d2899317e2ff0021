"""The three boundary figures (SPEC.md section 3) from a run folder.

The model is rebuilt from the run folder's own resolved config.yaml and checkpoint (never from
defaults); trailing key=value overrides are applied on top and printed with the values they
replace; overrides that change parameter shapes are refused.

    python scripts/vta_boundary_viz.py --run runs/vta_original --length 30
    python scripts/vta_boundary_viz.py --run runs/atari-private_eye-vta-s0 --length 30 \
        --window reward_or_delta dynamics.boundary_force_scale=0.0

Writes boundary_grid.png (frames with a READ red / COPY blue bar), boundary_internal.png (READ
probability, seg_len / seg_num, abstract and observation KL, reward and frame change) and
boundary_fired.png (only the READ frames) into --out_dir (default <run>/boundary_viz).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from imwm.analysis.figures import WINDOWS, plot_all
from imwm.analysis.report import boundary_options, collect_traces
from imwm.analysis.restore import restore_run, split_overrides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Trailing key=value arguments override the saved config.")
    p.add_argument("--run", required=True, help="run folder (config.yaml, checkpoints/latest.pt)")
    p.add_argument("--length", type=int, default=30, help="steps shown")
    p.add_argument("--window", choices=WINDOWS, default="start",
                   help="start: the first steps; reward_or_delta: centred on the first reward, else the largest frame change")
    p.add_argument("--episode", type=int, default=0, help="which episode / held-out sequence to show")
    p.add_argument("--seed", type=int, default=0, help="env seed of episode 0 (Atari)")
    p.add_argument("--out_dir", default=None, help="default: <run>/boundary_viz")
    p.add_argument("--checkpoint", default="latest.pt", help="file in <run>/checkpoints/")
    p.add_argument("--max_steps", type=int, default=1000, help="cap on agent steps per Atari episode")
    p.add_argument("--policy", choices=("agent", "random"), default="agent", help="who acts in Atari episodes")
    p.add_argument("--seq_len", type=int, default=None, help="held-out sequence length (Moving Shapes)")
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    flags, overrides = split_overrides(argv)
    args, rest = parser.parse_known_args(flags)
    if rest:
        parser.error(f"unrecognised arguments {rest}; overrides must be key=value (e.g. dynamics.max_seg_len=50)")
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
    print("command: python scripts/vta_boundary_viz.py " + " ".join(shlex.quote(a) for a in argv))
    for path in paths.values():
        print(f"wrote {path}")
    return {"paths": paths, "boundary_options": opts, "restored": restored, "trace": trace}


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:  # bad run folder / override: a message, not a traceback
        sys.exit(f"error: {err}")
