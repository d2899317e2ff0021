"""Train a fresh boundary detector inside a frozen, trained VTA run: does this detector design learn here?

``imwm-vta-detector``, or ``python scripts/vta_detector_only.py`` in a checkout.

The run folder (a ``train_vta.py`` run, either variant) gives the trained model, its data stream
and its held-out sequences; every weight is frozen, a freshly initialised posterior detector with
the options given replaces the model's own, and only that detector trains, by the model's own
loss (:mod:`imwm.analysis.detector_only`). Prints the AUC of q(READ) for the true changes and the
spread of its log-odds every ``--eval_every`` updates; ``--out_json`` keeps the curve. Nothing in
the run folder is written.

    imwm-vta-detector --run runs/vc/dcl_moving_shapes_s0 --norm batch --diff --updates 500
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from imwm.cli import save_json
from imwm.errors import run_main

#: How the printed ``command:`` line starts by default (:func:`cli`: ``imwm-vta-detector``).
PROG = "python scripts/vta_detector_only.py"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a train_vta.py run folder")
    p.add_argument("--checkpoint", default="latest.pt", help="file under <run>/checkpoints")
    p.add_argument("--norm", choices=["layer", "batch"], default="batch", help="the new detector's normalisation")
    p.add_argument("--diff", action=argparse.BooleanOptionalAction, default=True,
                   help="the new detector also reads embed_t - embed_{t-1}")
    p.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True,
                   help="the new detector sees embed[.. t] only for step t")
    p.add_argument("--updates", type=int, default=500, help="Adam steps on the detector alone")
    p.add_argument("--lr", type=float, default=1e-3, help="the detector's learning rate")
    p.add_argument("--seed", type=int, default=None, help="detector initialisation and sampling (default: the run's)")
    p.add_argument("--eval_every", type=int, default=100, help="score the held-out sequences every N updates")
    p.add_argument("--sequences", type=int, default=64, help="held-out sequences scored")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out_json", default=None, help="write the curve and the options here")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the command on ``argv`` (default ``sys.argv[1:]``); returns what ``--out_json`` gets."""
    from imwm.analysis.detector_only import train_detector_only
    from imwm.envs.boundary_data import BoundaryDataStream
    from imwm.training.vta_run import heldout_data, load_vta_run

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    model, cfg = load_vta_run(args.run, checkpoint=args.checkpoint)
    seed = int(cfg["seed"]) if args.seed is None else args.seed
    stream = BoundaryDataStream(cfg["data"])
    options = {"norm": args.norm, "diff": args.diff, "causal": args.causal, "lr": args.lr, "seed": seed}
    print(f"{args.run}: fresh detector " + ", ".join(f"{k}={v}" for k, v in options.items()))
    curve = train_detector_only(model, lambda i: stream.batch(i)["observation"], heldout_data(cfg),
                                norm=args.norm, diff=args.diff, causal=args.causal, updates=args.updates,
                                lr=args.lr, seed=seed, eval_every=args.eval_every, eval_sequences=args.sequences,
                                say=print)
    command = prog + " " + " ".join(shlex.quote(a) for a in argv)
    print(f"command: {command}\nCPU time: {curve[-1]['cpu_s']:.0f} s")
    result = {"run": args.run, "checkpoint": args.checkpoint, "options": options, "curve": curve, "command": command}
    save_json(result, args.out_json)
    return result


def cli(prog: str = "imwm-vta-detector") -> None:
    """The ``imwm-vta-detector`` console script: a bad run folder or flag is one line and exit status 2."""
    run_main(main, None, prog, also=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    cli()
