"""Where a trained VTA model's READs sit around the true changes, and what a minimum segment length does to them.

``imwm-vta-reads``, or ``python scripts/vta_read_placement.py`` in a checkout.

For each ``train_vta.py`` run folder given, on its held-out sequences
(:mod:`imwm.analysis.read_placement`): the READs after frame 0 counted by their offset ``t - c``
from the nearest true change and by steps since the last change; for the dreamer variant, the
model re-evaluated with each ``--min_seg_len`` (F1 ±1 step against random READs of the same
count), its all-COPY surprise by steps since the last change, and that surprise's ceiling: the
F1 of READs at each sequence's most surprising steps, as many as it has changes, at least each
``--gap`` apart; the detector's log-odds and that surprise, each under one threshold that READs as
often as there are changes (a wrong READ count told from a wrong placement); with ``--measures``,
the AUC and ceiling of every measure of that surprise in :mod:`imwm.analysis.surprise_measures`
(the KL's shift and spread parts, decoded frames). Nothing in a run folder is written;
``--out_json`` keeps every number.

    imwm-vta-reads --run runs/vc/ms3_moving_shapes_s0 runs/vc/ms3_dynamics_s0 --min_seg_len 2 3 4
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from imwm.cli import save_json
from imwm.errors import run_main

#: How the printed ``command:`` line starts by default (:func:`cli`: ``imwm-vta-reads``).
PROG = "python scripts/vta_read_placement.py"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, nargs="+", help="train_vta.py run folders")
    p.add_argument("--checkpoint", default="latest.pt", help="file under <run>/checkpoints")
    p.add_argument("--min_seg_len", type=int, nargs="*", default=[2, 3, 4],
                   help="minimum segment lengths to re-evaluate the dreamer variant with (none: skip)")
    p.add_argument("--most", type=int, default=8, help="steps since a change shown for the surprise")
    p.add_argument("--gap", type=int, nargs="*", default=[1, 2, 3],
                   help="spacings of the surprise's ceiling (READs at least this many steps apart; none: skip)")
    p.add_argument("--measures", action="store_true",
                   help="also score the all-COPY pass with every surprise measure (AUC and ceiling at each --gap)")
    p.add_argument("--draws", type=int, default=50, help="random-baseline draws per re-evaluation")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out_json", default=None, help="write every number here")
    return p


def _counts(counts: dict[int, int], signed: bool = True) -> str:
    return " ".join(f"{k:+d}:{v}" if k and signed else f"{k}:{v}" for k, v in counts.items())


def _off_change_peak(offsets: dict[int, int]) -> str:
    off = {k: v for k, v in offsets.items() if abs(k) > 1}
    if not off:
        return "no READ more than a step from a change"
    peak = max(off, key=off.get)
    return f"{sum(off.values())} READs more than a step from a change, most at {peak:+d} ({off[peak] / sum(off.values()):.0%})"


def place(run: str, args: argparse.Namespace) -> dict:
    """Every number for one run folder, printed as it is computed."""
    from imwm.analysis.read_placement import (ceiling_rows, copy_surprise, detector_log_odds, mean_by_steps_since_change,
                                              min_seg_len_sweep, rate_matched_rows, read_offset_counts,
                                              reads_by_steps_since_change)
    from imwm.analysis.surprise_measures import surprise_measures
    from imwm.training.vta_run import heldout_data, load_vta_run, predict_boundaries

    model, cfg = load_vta_run(run, checkpoint=args.checkpoint)
    data = heldout_data(cfg)
    pred, true = predict_boundaries(model, data)["boundary"].numpy(), data["true_boundary"][..., 0].numpy()
    out = {"run": run, "offsets": read_offset_counts(pred, true), "since_change": reads_by_steps_since_change(pred, true)}
    print(f"{run}: READs after frame 0 by offset t - c from the nearest change: {_counts(out['offsets'])}")
    print(f"  by steps since the last change: {_counts(out['since_change'], signed=False)}")
    print(f"  {_off_change_peak(out['offsets'])}")
    own = getattr(getattr(model, "dynamics", None), "min_seg_len", None)
    if own is None:
        print(f"  {type(model).__name__} has no minimum segment length or all-COPY surprise: the rest is for vta=dreamer")
        return out
    out["trained_min_seg_len"] = own
    out["min_seg_len"] = min_seg_len_sweep(model, data, args.min_seg_len, draws=args.draws)
    for r in out["min_seg_len"]:
        print(f"  min_seg_len {r['min_seg_len']}{' (trained)' if r['min_seg_len'] == own else ''}: "
              f"{r['reads']} READs, precision {r['precision']:.3f}, recall {r['recall']:.3f}, F1 {r['f1']:.3f}, "
              f"random {r['random_f1']:.3f}, {r['ratio']:.2f}x")
    # one all-COPY pass serves the profile, the ceiling and --measures (its "kl" or "shift" row is the
    # surprise the detector reads, the same numbers copy_surprise gives)
    measures = surprise_measures(model, data) if args.measures else None
    surprise = measures[model.dynamics.boundary_surprise_measure] if measures else copy_surprise(model, data)
    out["copy_surprise"] = mean_by_steps_since_change(surprise, true, most=args.most)
    print("  all-COPY surprise by steps since the last change: "
          + " ".join(f"{k}:{v:.2f}" for k, v in out["copy_surprise"].items()))
    out["surprise_ceiling"] = ceiling_rows(surprise, true, args.gap, draws=args.draws)
    for r in out["surprise_ceiling"]:
        print(f"  surprise ceiling, gap {r['gap']}: {r['reads']} READs at the most surprising steps, F1 {r['f1']:.3f}, "
              f"random {r['random_f1']:.3f}, {r['ratio']:.2f}x")
    out["rate_matched"] = rate_matched_rows({"detector": detector_log_odds(model, data), "surprise": surprise}, true, own,
                                            draws=args.draws)
    for r in out["rate_matched"]:
        print(f"  {r['score']} at the true rate: one threshold, {r['reads']} READs ({r['true']} changes), "
              f"F1 {r['f1']:.3f}, random {r['random_f1']:.3f}, {r['ratio']:.2f}x")
    if measures:
        out["measures"] = _measures(measures, true, args)
    return out


def _measures(measures: dict, true, args: argparse.Namespace) -> list[dict]:
    """AUC and ceiling of every surprise measure (:mod:`imwm.analysis.surprise_measures`), printed."""
    from imwm.analysis.surprise_measures import measure_rows

    rows = measure_rows(measures, true, args.gap or [3], draws=args.draws)
    for r in rows:
        ceiling = ", ".join(f"gap {c['gap']} F1 {c['f1']:.3f} ({c['ratio']:.2f}x)" for c in r["ceiling"])
        print(f"  measure {r['measure']}: AUC {r['auc']:.3f}, ceiling {ceiling}")
    return rows


def main(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the command on ``argv`` (default ``sys.argv[1:]``); returns what ``--out_json`` gets."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [place(run, args) for run in args.run]
    command = prog + " " + " ".join(shlex.quote(a) for a in argv)
    print(f"command: {command}")
    result = {"runs": runs, "command": command}
    save_json(result, args.out_json)
    return result


def cli(prog: str = "imwm-vta-reads") -> None:
    """The ``imwm-vta-reads`` console script: a bad run folder or flag is one line and exit status 2."""
    run_main(main, None, prog, also=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    cli()
