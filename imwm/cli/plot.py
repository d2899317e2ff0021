"""Learning curves from run folders: seeds as mean +- 95% bootstrap CI, one panel per game, and the
human-normalised IQM over Atari games (as rliable computes it).

Give run folders, folders of runs or a sweep folder; every ``metrics.csv`` below them is a run.
Runs that differ only in the seed are grouped (by run name without ``-s<seed>``, or with
``--group-by config`` by the saved config without seed and bookkeeping keys).

Examples (``imwm-plot``, or ``python scripts/plot.py`` in a checkout):
    imwm-plot runs/ --out curves.png
    imwm-plot runs/atari-breakout-rssm-s0 runs/atari-breakout-rssm-s1 --out breakout.png
    imwm-plot runs/sweep --group-by config --x minutes --out sweep.png
    imwm-plot runs/ --metric train/episode_return --out train.png

Prints one line per group (final mean and CI) and, for Atari, per method (final IQM and CI).
A user error (no runs, a bad option) is one line, ``imwm: error: ...``, exit status 2.
"""
import argparse
import warnings

from imwm.errors import run_main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("paths", nargs="+", help="run folders, parents of runs, or sweep folders")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default curves.png)")
    p.add_argument("--metric", default="eval/return", help="metrics.csv column (default eval/return)")
    p.add_argument("--x", choices=("env_step", "minutes"), default="env_step",
                   help="x axis: env steps or wall-clock minutes (eval/minutes, else train/minutes)")
    p.add_argument("--group-by", choices=("name", "config"), default="name")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--title", default=None)
    p.add_argument("--no-aggregate", action="store_true", help="no Atari IQM panel")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from imwm.analysis.curves import plot_learning_curves
    from imwm.errors import UserError

    if args.bootstrap < 1:
        raise UserError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = plot_learning_curves(args.paths, args.out, metric=args.metric, x=args.x, by=args.group_by,
                                       n_boot=args.bootstrap, seed=args.seed, title=args.title,
                                       aggregate=not args.no_aggregate)
    for w in caught:
        print(f"[imwm] warning: {w.message}")
    for path in summary["skipped"]:
        print(f"[imwm] skipped {path}: no {args.metric} values")
    for label, g in summary["groups"].items():
        print(f"[imwm] {label}: {args.metric} {g['final_mean']:.2f} [{g['final_low']:.2f}, {g['final_high']:.2f}] "
              f"at {args.x} {g['x_last']:g} (n={g['n']} seeds)")
    for method, a in summary["aggregate"].items():
        print(f"[imwm] {method}: human-normalised IQM {a['final_iqm']:.3f} [{a['final_low']:.3f}, "
              f"{a['final_high']:.3f}] over {len(a['games'])} games, {a['n']} runs")
    print(f"[imwm] wrote {summary['out']} ({len(summary['runs'])} runs)")
    return summary


def cli() -> None:
    """The ``imwm-plot`` console script: a user error is one line and exit status 2."""
    run_main(main)


if __name__ == "__main__":
    cli()
