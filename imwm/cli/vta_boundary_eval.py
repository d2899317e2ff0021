"""Where does VTA's READ fire? Boundaries against events, from a run folder.

``imwm-vta-eval``, or ``python scripts/vta_boundary_eval.py`` in a checkout.

The model is rebuilt from the run folder's own resolved config.yaml and checkpoint (never from
defaults); trailing key=value overrides are applied on top and printed with the values they
replace; overrides that change parameter shapes are refused.

    imwm-vta-eval --run runs/vta_original_moving_shapes --episodes 16
    imwm-vta-eval --run runs/atari-private_eye-vta-s0 --episodes 3 \
        --delta_percentile 90 95 99 --permutations 200 --out_json runs/atari-private_eye-vta-s0/boundary_eval.json \
        dynamics.boundary_force_scale=0.0

Atari runs: fresh episodes with the trained actor (or --policy random); events are frame change
above each --delta_percentile, reward != 0, score change, life loss and episode end.
Vector-observation runs (CartPole, e.g. ``train.py preset=debug dynamics=vta``): the same, with
"frame change" the mean absolute change of the observation vector.
Moving Shapes runs (train_vta.py): held-out sequences; also precision/recall/F1 against the
true changes, next to random and evenly spaced boundaries of the same count.

A DreamerV3-style command line is accepted too: --logdir is --run; --vta_max_seg_len 50
means dynamics.max_seg_len=50 (vta.max_seg_len=50 for a train_vta.py run); --configs and --task
are answered from the run's saved config, which fixes them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from imwm.analysis.report import boundary_options, collect_traces, evaluate_traces, format_report, to_json
from imwm.analysis.restore import restore_run
from imwm.analysis.script_args import parse_script_args, run_parser
from imwm.errors import run_main

#: How :func:`main`'s printed ``command:`` line starts by default (:func:`cli`: ``imwm-vta-eval``).
PROG = "python scripts/vta_boundary_eval.py"


def build_parser() -> argparse.ArgumentParser:
    p = run_parser(__doc__.split("\n\n")[0], seed_help="env seed of episode 0 and permutation seed")
    p.add_argument("--episodes", type=int, default=3, help="fresh episodes / held-out sequences")
    p.add_argument("--delta_percentile", type=float, nargs="+", default=[90.0],
                   help="frame-change events: steps above this percentile of the episode (several allowed)")
    p.add_argument("--permutations", type=int, default=200, help="random placements for the p-value")
    p.add_argument("--out_json", default=None, help="write the full result here (default: <run>/boundary_eval.json)")
    p.add_argument("--tolerance", type=int, default=1, help="±steps for matching true changes")
    p.add_argument("--window", type=int, default=None,
                   help="train.py runs: trace each episode in windows of N steps from a fresh state, as the "
                        "world model trains (e.g. replay.batch_length); each window's forced first READ is left out")
    p.add_argument("--event_window", type=int, default=0,
                   help="also count the N steps after each event as the event (a segment starting after a reward)")
    return p


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    return parse_script_args(build_parser(), argv)


def main(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` starts the ``command:`` line."""
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse(argv)
    t0 = time.time()
    restored = restore_run(args.run, overrides, checkpoint=args.checkpoint)
    opts = boundary_options(restored)
    if opts:
        print("boundary options in the restored model: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
    traces = collect_traces(restored, episodes=args.episodes, seed=args.seed, seq_len=args.seq_len,
                            max_steps=args.max_steps, policy=args.policy, window=args.window)
    result = evaluate_traces(traces, percentiles=args.delta_percentile, permutations=args.permutations,
                             seed=args.seed, tolerance=args.tolerance, event_window=args.event_window)
    command = prog + " " + " ".join(shlex.quote(a) for a in argv)
    parts = f"{len(traces)} episodes" if args.window is None else f"{args.episodes} episodes in {len(traces)} windows"
    print(format_report(result, title=f"{args.run} ({restored.kind}, {parts})"))
    print(f"\ncommand: {command}\ntime: {time.time() - t0:.1f} s")
    result.update(run=args.run, kind=restored.kind, command=command, boundary_options=opts,
                  overrides=[{"key": k, "saved": old, "used": new} for k, old, new in restored.changes],
                  episode_lengths=[len(t["boundary"]) for t in traces], window=args.window,
                  checkpoint_counters=restored.checkpoint.get("counters"))
    out = args.out_json or os.path.join(args.run, "boundary_eval.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        fh.write(to_json(result))
    print(f"wrote {out}")
    return result


#: Errors answered in one line ``imwm: error: ...`` (a bad run folder, flag or override), besides
#: ``imwm.errors.UserError``; ``IMWM_DEBUG=1`` shows the traceback instead.
USER_ERRORS = (ValueError, FileNotFoundError)


def cli(prog: str = "imwm-vta-eval") -> None:
    """The ``imwm-vta-eval`` console script: a user error is one line and exit status 2."""
    run_main(main, None, prog, also=USER_ERRORS)


if __name__ == "__main__":
    cli()
