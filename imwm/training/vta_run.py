"""Training logic behind ``scripts/train_vta.py``: VTA on a known-boundary video dataset.

The dataset is the ``data`` section (``data.kind``: ``moving_shapes``, ``appearance``, ``dynamics``,
``scene_cut``; :mod:`imwm.envs.boundary_data`), chosen on the command line with ``data=<name>``.

Two variants, chosen by ``vta.variant``:

- ``original``: :class:`imwm.vta.VTAOriginal` (its own CNN encoder/decoder, bidirectional posterior,
  loss computed inside ``forward``);
- ``dreamer``: :class:`imwm.vta.VTADynamics` inside a small world model
  (:class:`imwm.vta.sequence_model.VTASequenceModel`: DreamerV3-style encoder -> VTADynamics ->
  decoder, loss = reconstruction + ``VTADynamics.kl_loss``) trained on the recorded sequences.

Run folder ``<run_dir>/`` (docs/architecture.md): ``config.yaml`` (resolved), ``metrics.csv`` (one
row per ``log_every`` updates, plus held-out boundary precision/recall/F1, AUC of q(READ) and its
spread over steps, ``eval_spread``, every ``eval_every``),
``checkpoints/latest.pt`` (``torch.load(weights_only=True)``; keys ``model``, ``optimizer``,
``counters``, ``rng``, ``config``), ``eval.json`` (final held-out evaluation with baselines).

Analysis code rebuilds a model with :func:`build_vta_model` from the saved config (never from
defaults) or simply calls :func:`load_vta_run`.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml

from imwm.analysis.detector_only import boundary_detector
from imwm.envs.boundary_data import DATASETS, LOADER_KEYS, BoundaryDataStream, dataset_keys, generate_boundary_data
from imwm.errors import ConfigError, config_keys, is_integer, unknown_keys
from imwm.training.checkpoint import (load_checkpoint, load_latest, rng_state, save_checkpoint,
                                      set_rng_state)
from imwm.training.config import to_plain

__all__ = ["build_vta_model", "load_vta_run", "evaluate_boundaries", "heldout_data", "predict_boundaries",
           "read_logodds_std", "train", "validate_vta_config", "VARIANTS"]

VARIANTS = ("original", "dreamer")
#: per-step flags of the shape videos (``imwm.envs.shape_videos.records``) that mark wall bounces
BOUNCE_KEYS = ("actor_bounce", "distractor_bounce")
METRIC_COLUMNS = (
    "update", "wall_s", "cpu_s", "loss", "obs_cost", "kl_abs", "kl_obs", "kl_mask", "boundary_kl",
    "read_rate", "temp", "force_scale", "eval_precision", "eval_recall", "eval_f1", "eval_read_rate",
    "eval_auc", "eval_spread",
)


def _plain(cfg: Any) -> dict:
    return cfg if isinstance(cfg, dict) else to_plain(cfg)


def _vta_class(variant: Any):
    if variant == "original":
        from imwm.vta.original import VTAOriginal

        return VTAOriginal
    if variant == "dreamer":
        from imwm.vta.sequence_model import VTASequenceModel

        return VTASequenceModel
    raise ConfigError("vta.variant", f"must be one of {list(VARIANTS)}", variant)


def _vta_keys(cls) -> set[str]:
    """Config keys of ``vta`` for a model class: its keyword arguments plus the boundary options
    (and, for the dreamer variant, the VTADynamics arguments it passes on)."""
    from imwm.vta import BOUNDARY_OPTION_DEFAULTS, VTADynamics

    def named(fn) -> set[str]:
        params = inspect.signature(fn).parameters
        return {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}

    keys = named(cls.__init__) | set(BOUNDARY_OPTION_DEFAULTS)
    if cls.__name__ == "VTASequenceModel":
        keys |= named(VTADynamics.__init__) - {"action_dim", "embed_dim"}
    return keys


def _check_vta_section(vta: Any) -> tuple[Any, dict]:
    from imwm.vta import BOUNDARY_OPTION_DEFAULTS
    from imwm.vta.options import check_boundary_option_values

    if not isinstance(vta, Mapping):
        raise ConfigError("vta", "must be a mapping of model arguments", vta)
    kwargs = dict(vta)
    variant = kwargs.pop("variant", "original")
    cls = _vta_class(variant)
    valid = _vta_keys(cls)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise unknown_keys("vta", unknown, sorted(valid | {"variant"}),
                           where=f" keys of vta (variant {variant})")
    image_size = kwargs.get("image_size", 64)
    if not is_integer(image_size, 16) or image_size % 16:
        raise ConfigError("vta.image_size", "must be a multiple of 16 (set by data.image_size)", image_size)
    obs_std = kwargs.get("obs_std", 1.0)
    if not isinstance(obs_std, (int, float)) or isinstance(obs_std, bool) or not obs_std > 0:
        raise ConfigError("vta.obs_std", "must be a number > 0", obs_std)
    with config_keys("vta"):
        check_boundary_option_values({k: v for k, v in kwargs.items() if k in BOUNDARY_OPTION_DEFAULTS})
    return cls, kwargs


def build_vta_model(cfg: Mapping) -> torch.nn.Module:
    """Rebuild the model of a ``train_vta`` config (a resolved dict or DictConfig).

    Reads ``cfg["vta"]``: ``variant`` picks the class; every other key is a constructor kwarg, so
    the restored model has exactly the training-time options (``max_seg_len`` etc.).

    Raises:
        ConfigError: naming the full key (``vta.boundary_temp``) and the value.
    """
    cfg = _plain(cfg)
    if "vta" not in cfg:
        raise ConfigError("vta", "missing config section; is this a train_vta config?")
    cls, kwargs = _check_vta_section(cfg["vta"])
    with config_keys("vta", kwargs):
        return cls(**kwargs)


# train_vta.yaml's data.* and train.* keys: (rule, minimum) by key. data.* keys beyond these are
# checked against the dataset generator's kwargs (imwm.envs.boundary_data.dataset_keys).
_DATA_RULES = {"kind": ("choice", DATASETS), "image_size": ("int", 16), "seq_len": ("int", 2),
               "min_seg_len": ("int", 1), "max_seg_len": ("int", 1), "batch_size": ("int", 1),
               "heldout_sequences": ("int", 1), "seed": ("int", 0), "object_size": ("pair", None),
               "distractor": ("bool", None)}
_TRAIN_RULES = {"updates": ("int", 1), "lr": ("positive", None), "adam_eps": ("positive", None),
                "boundary_lr_scale": ("positive", None), "grad_clip": ("positive", None), "threads": ("int", 0),
                "max_minutes": ("non_negative", None), "log_every": ("int", 1), "eval_every": ("int", 0),
                "checkpoint_every": ("int", 0)}
_TOP_KEYS = {"name", "run_dir", "seed", "resume", "data", "train", "vta", "hydra"}
_OPTIONAL = {"data": {"kind", "object_size", "distractor"}, "train": {"boundary_lr_scale", "max_minutes"}}


def _check_section(name: str, node: Any, rules: Mapping) -> None:
    if not isinstance(node, Mapping):
        raise ConfigError(name, "must be a mapping (a config section)", node)
    unknown = sorted(set(node) - set(rules))
    if unknown:
        raise unknown_keys(name, unknown, sorted(rules))
    missing = sorted(set(rules) - set(node) - _OPTIONAL.get(name, set()))
    if missing:
        raise ConfigError(", ".join(f"{name}.{k}" for k in missing),
                          "missing config key" + ("s" if len(missing) > 1 else ""))
    for key, value in node.items():
        rule, minimum = rules[key]
        full = f"{name}.{key}"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if rule == "int" and not is_integer(value, minimum):
            raise ConfigError(full, f"must be an integer >= {minimum}", value)
        if rule == "positive" and not (number and math.isfinite(value) and value > 0):
            raise ConfigError(full, "must be a finite number > 0", value)
        if rule == "non_negative" and not (number and math.isfinite(value) and value >= 0):
            raise ConfigError(full, "must be a finite number >= 0", value)
        if rule == "choice" and value not in minimum:
            raise ConfigError(full, f"must be one of {list(minimum)}", value)
        if rule == "bool" and not isinstance(value, bool):
            raise ConfigError(full, "must be true or false", value)
        if rule == "pair":
            ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            if not ok or not 0.02 <= value[0] <= value[1] <= 0.4:
                raise ConfigError(full, "must be [lo, hi] with 0.02 <= lo <= hi <= 0.4 (fractions of the frame side)",
                                  value)


def validate_vta_config(cfg: Any) -> dict:
    """Checks a ``train_vta`` config before anything is built; returns it as a resolved plain dict.

    Raises:
        ConfigError: naming the full key (``train.updates``, ``vta.boundary_temp``) and the value.

    Example:
        >>> from imwm.configs import compose_config
        >>> cfg = to_plain(compose_config(config_name="train_vta"))
        >>> validate_vta_config(cfg)["vta"]["image_size"]  # resolved from data.image_size
        32
        >>> validate_vta_config({**cfg, "train": {**cfg["train"], "updates": 0}})
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: train.updates: must be an integer >= 1 (got 0)
    """
    cfg = _plain(cfg)
    unknown = sorted(set(cfg) - _TOP_KEYS)
    if unknown:
        raise unknown_keys("", unknown, sorted(_TOP_KEYS - {"hydra"}), where=" top-level keys")
    missing = sorted({"run_dir", "seed", "data", "train", "vta"} - set(cfg))
    if missing:
        raise ConfigError(", ".join(missing), "missing config key" + ("s" if len(missing) > 1 else ""))
    if not is_integer(cfg["seed"], 0):
        raise ConfigError("seed", "must be an integer >= 0", cfg["seed"])
    if not isinstance(cfg.get("resume", True), bool):
        raise ConfigError("resume", "must be true or false", cfg["resume"])
    _check_section("data", cfg["data"], _DATA_RULES)
    _check_section("train", cfg["train"], _TRAIN_RULES)
    d = cfg["data"]
    kind = d.get("kind", "moving_shapes")
    foreign = sorted(set(d) - dataset_keys(kind) - set(LOADER_KEYS))
    if foreign:
        raise ConfigError(f"data.{foreign[0]}", f"is not an option of data.kind={kind}", d[foreign[0]])
    if d["max_seg_len"] < d["min_seg_len"]:
        raise ConfigError("data.max_seg_len", f"must be >= data.min_seg_len ({d['min_seg_len']})", d["max_seg_len"])
    _check_vta_section(cfg["vta"])
    return cfg


def load_vta_run(run_dir: str | os.PathLike, *, checkpoint: str = "latest.pt") -> tuple[torch.nn.Module, dict]:
    """Model and resolved config of a finished (or running) ``train_vta`` run, in ``eval()`` mode.

    The config comes from the checkpoint itself (identical to ``config.yaml``), so the restored
    model has the training-time boundary options.
    """
    state = load_checkpoint(Path(run_dir) / "checkpoints" / checkpoint)
    cfg = state["config"]
    model = build_vta_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg


def heldout_data(cfg: Mapping):
    """The held-out split of the run's dataset (``data.heldout_sequences`` sequences of ``data.kind``)."""
    d = _plain(cfg)["data"]
    return generate_boundary_data(d, d["heldout_sequences"], split="heldout")


@torch.no_grad()
def predict_boundaries(model: torch.nn.Module, data, *, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Posterior READ flags and probabilities ``[N, T]`` on ``data["observation"]`` (model put in eval mode)."""
    was_training = model.training
    model.eval()
    boundary, read_prob = [], []
    for i in range(0, len(data["observation"]), batch_size):
        out = model(data["observation"][i : i + batch_size])
        boundary.append(out["boundary"][..., 0])
        read_prob.append(out["read_prob"][..., 0])
    model.train(was_training)
    return {"boundary": torch.cat(boundary) > 0.5, "read_prob": torch.cat(read_prob)}


def read_logodds_std(read_prob: torch.Tensor) -> float:
    """How much q(READ) depends on the frames: the standard deviation of ``log q / (1 - q)`` over its entries.

    Example:
        >>> read_logodds_std(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
        0.0
    """
    return float(torch.logit(read_prob.double(), eps=1e-12).std())


def evaluate_boundaries(model: torch.nn.Module, data, *, draws: int = 200, seed: int = 0) -> dict:
    """Precision / recall / F1 (±1 step) of predicted READs vs the true changes, with baselines.

    Frame 0 is excluded (it is a segment start by definition and always READ). The random,
    evenly spaced and frame-difference baselines (the largest pixel changes, no learning) use the
    same number of boundaries per sequence as the model. Also returned: ``auc_read_prob`` (ROC AUC
    of q(READ) for the true change steps), ``read_logodds_std`` (how much q(READ) depends on the
    frames at all: the standard deviation of ``log q / (1 - q)`` over the held-out steps; a
    detector that gives every step nearly the same probability has an AUC near 0.5 for that
    reason, not because it ranks the wrong steps), ``exact`` (model, random and frame-difference PRF with
    no tolerance), ``read_offsets`` (:func:`imwm.analysis.read_offsets`) and, where the data records
    wall bounces, ``reads_at_bounces``: for the actor's and the distractor's bounces, how many READs
    away from every change sit next to one, against chance (:func:`imwm.analysis.reads_at_events`;
    a bounce turns the motion too, but it is ordinary motion, not a segment change).
    """
    from imwm.analysis.boundary_truth import compare_with_truth, read_offsets, reads_at_events
    from imwm.analysis.events import frame_delta
    from imwm.analysis.metrics import roc_auc

    predicted = predict_boundaries(model, data)
    pred = predicted["boundary"][:, 1:].numpy()
    true = data["true_boundary"][:, 1:, 0].numpy()
    delta = np.stack([frame_delta(seq) for seq in data["observation"].numpy()])[:, 1:]
    exact = compare_with_truth(pred, true, delta, tolerance=0, draws=draws, seed=seed)
    out = {
        **compare_with_truth(pred, true, delta, tolerance=1, draws=draws, seed=seed),
        # threshold-free: does q(READ) rank the true change steps above the others? (0.5 = no signal)
        "auc_read_prob": float(roc_auc(predicted["read_prob"][:, 1:].numpy().ravel(), true.ravel())),
        "read_logodds_std": read_logodds_std(predicted["read_prob"][:, 1:]),
        # a ±1-step F1 hides READs a step early; these do not
        "exact": {k: exact[k] for k in ("model", "random", "frame_difference")},
        "read_offsets": read_offsets(pred, true),
    }
    if all(key in data.keys() for key in BOUNCE_KEYS):  # only the shape videos record wall bounces
        out["reads_at_bounces"] = {key: reads_at_events(pred, true, data[key][:, 1:, 0].numpy()) for key in BOUNCE_KEYS}
    return out


def _optimizer(model: torch.nn.Module, *, lr: float, eps: float, boundary_lr_scale: float) -> torch.optim.Adam:
    """Adam; the posterior boundary detector's learning rate (and its frame-change view's, if any)
    is ``lr * boundary_lr_scale``.

    With the straight-through estimator the detector learns through a discrete choice whose
    gradient is small next to the reconstruction's; a larger step for it is a cheap remedy.
    """
    if not boundary_lr_scale > 0:
        raise ValueError(f"train.boundary_lr_scale must be > 0, got {boundary_lr_scale!r}")
    if boundary_lr_scale == 1.0:  # one group, so checkpoints of either layout resume as written
        return torch.optim.Adam(model.parameters(), lr=lr, eps=eps)
    ids = {id(p) for p in boundary_detector(model).parameters()}
    view = getattr(model, "frame_change", None)
    ids |= {id(p) for p in view.parameters()} if view is not None else set()
    rest = [p for p in model.parameters() if id(p) not in ids]
    detector = [p for p in model.parameters() if id(p) in ids]
    return torch.optim.Adam([{"params": rest}, {"params": detector, "lr": lr * boundary_lr_scale}], lr=lr, eps=eps)


def _write_config(run_dir: Path, cfg: dict) -> None:
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, run_dir / "config.yaml")


class _CsvLog:
    """``metrics.csv``: one row per log; a resumed run appends under the header it already has."""

    def __init__(self, path: Path, resume: bool):
        self.path, self.columns = path, METRIC_COLUMNS
        if resume and path.exists():
            with open(path, newline="") as f:  # a folder written before a column was added keeps its layout
                self.columns = tuple(next(csv.reader(f), METRIC_COLUMNS))
        else:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(METRIC_COLUMNS)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(["" if row.get(k) is None else _fmt(row[k]) for k in self.columns])


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _restore(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, float]:
    """Load the run's latest checkpoint into ``model`` and ``opt``: (updates done, CPU seconds spent)."""
    _, state = load_latest(run_dir / "checkpoints", required=("model", "optimizer", "counters", "rng"))
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    print(f"resumed {run_dir} at update {state['counters']['update']}")
    return int(state["counters"]["update"]), float(state["counters"]["cpu_s"])


def _update(model: torch.nn.Module, opt: torch.optim.Optimizer, obs: torch.Tensor, *, grad_clip: float) -> dict:
    """One gradient step on a batch of sequences; the logged statistics as floats."""
    out = model(obs)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    stats = {"loss": out["loss"], "read_rate": out["boundary"][:, 1:].mean()}
    stats.update({k: out[k].mean() for k in ("obs_cost", "kl_abs", "kl_obs", "kl_mask", "boundary_kl")})
    return {k: float(v.detach()) for k, v in stats.items()}


def _eval_columns(model: torch.nn.Module, heldout) -> dict:
    """The held-out boundary quality logged every ``eval_every`` updates (20 random draws)."""
    ev = evaluate_boundaries(model, heldout, draws=20)
    return {"eval_precision": ev["model"]["precision"], "eval_recall": ev["model"]["recall"],
            "eval_f1": ev["model"]["f1"], "eval_read_rate": ev["read_rate"], "eval_auc": ev["auc_read_prob"],
            "eval_spread": ev["read_logodds_std"]}


def train(cfg: Any) -> Path:
    """Train a VTA model on the ``data`` section's dataset as ``cfg`` says; returns the run folder.

    Phases per update: a batch from the dataset stream, a gradient step, a log row (with the
    held-out evaluation every ``eval_every`` updates), a checkpoint every ``checkpoint_every``; at
    the end (the budget, or ``max_minutes``) the full evaluation in ``eval.json``.
    """
    cfg = validate_vta_config(cfg)
    tr, d = cfg["train"], cfg["data"]
    if tr["threads"] > 0:
        torch.set_num_threads(int(tr["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    # the model first: a value only its constructor can judge is refused before the run folder exists
    model = build_vta_model(cfg)
    opt = _optimizer(model, lr=float(tr["lr"]), eps=float(tr["adam_eps"]),
                     boundary_lr_scale=float(tr.get("boundary_lr_scale", 1.0)))
    run_dir = Path(cfg["run_dir"])
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    _write_config(run_dir, cfg)
    ckpt_path = run_dir / "checkpoints" / "latest.pt"
    resumable = ckpt_path.exists() or ckpt_path.with_name("previous.pt").exists()
    start, spent_cpu = _restore(run_dir, model, opt) if cfg.get("resume", True) and resumable else (0, 0.0)
    log = _CsvLog(run_dir / "metrics.csv", resume=start > 0)
    stream = BoundaryDataStream(d)
    heldout = heldout_data(cfg)
    wall0, cpu0 = time.time(), time.process_time()

    def cpu_s() -> float:
        return spent_cpu + time.process_time() - cpu0

    max_s = float(tr.get("max_minutes", 0)) * 60
    model.train()
    done, sums, n_sum = start, {}, 0
    for update in range(start, int(tr["updates"])):
        model.set_progress(update)
        stats = _update(model, opt, stream.batch(update)["observation"], grad_clip=float(tr["grad_clip"]))
        sums, n_sum, done = {k: sums.get(k, 0.0) + v for k, v in stats.items()}, n_sum + 1, update + 1
        timed_out = max_s > 0 and time.time() - wall0 > max_s
        last = done == int(tr["updates"]) or timed_out
        evaluate = last or (tr["eval_every"] > 0 and done % int(tr["eval_every"]) == 0)
        if last or evaluate or done % int(tr["log_every"]) == 0:
            row = {k: v / n_sum for k, v in sums.items()}
            row.update(update=done, wall_s=time.time() - wall0, cpu_s=cpu_s(), temp=model.current_temp,
                       force_scale=model.current_force_scale)
            row.update(_eval_columns(model, heldout) if evaluate else {})
            log.write(row)
            print(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
            sums, n_sum = {}, 0
        if last or (tr["checkpoint_every"] > 0 and done % int(tr["checkpoint_every"]) == 0):
            save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "counters": {"update": done, "cpu_s": cpu_s()}, "rng": rng_state(),
                                        "config": cfg})
        if timed_out:
            print(f"stopping after {tr['max_minutes']} minutes at update {done}")
            break
    ev = evaluate_boundaries(model, heldout, draws=200, seed=int(cfg["seed"]))
    ev.update(updates=done, cpu_s=cpu_s(), wall_s=time.time() - wall0, boundary_options=model.boundary_options())
    (run_dir / "eval.json").write_text(json.dumps(ev, indent=2, default=float))
    print(format_eval_table(ev, name=cfg.get("name", run_dir.name)))
    return run_dir


def format_eval_table(ev: dict, *, name: str) -> str:
    """Markdown table of the model's boundary PRF next to the baselines, then the AUC line and,
    where the evaluation has them, exact-step F1 and the READ offsets."""
    lines = [
        f"| {name} | precision | recall | F1 | boundaries |",
        "|---|---|---|---|---|",
    ]
    for key in ("model", "random", "periodic", "frame_difference"):
        if key not in ev:  # evaluations written before the frame-difference baseline existed
            continue
        r = ev[key]
        std = f" ± {r['f1_std']:.3f}" if "f1_std" in r else ""
        lines.append(f"| {key} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f}{std} | {r['n_pred']} / {r['n_true']} true |")
    auc = f"ROC AUC vs true changes: q(READ) {ev['auc_read_prob']:.3f}"
    if "frame_difference" in ev:
        auc += f", frame difference {ev['frame_difference']['auc']:.3f}"
    if "read_logodds_std" in ev:  # evaluations written before it existed lack it
        auc += f"; spread of q(READ) over steps (std of its log-odds) {ev['read_logodds_std']:.3f}"
    lines.append(f"\n{auc}; CPU time {ev.get('cpu_s', float('nan')):.0f} s")
    if "exact" in ev:  # evaluations written before these existed lack them
        f1 = {k: ev["exact"][k]["f1"] for k in ("model", "random", "frame_difference")}
        lines.append(f"exact step (no tolerance): F1 {f1['model']:.3f}, random {f1['random']:.3f}, "
                     f"frame difference {f1['frame_difference']:.3f}")
        lines.append("READs against the nearest change: " + ", ".join(f"{k} {v}" for k, v in ev["read_offsets"].items()))
    for key, r in ev.get("reads_at_bounces", {}).items():
        lines.append(f"READs off the changes next to a bounce of the {key.split('_')[0]}: {r['at_event']} of {r['off_reads']} "
                     f"({r['share']:.2f}; chance {r['chance']:.2f}, lift {r['lift']:.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m imwm.training.vta_run RUN_DIR [RUN_DIR ...]``: held-out boundary table of finished runs."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--draws", type=int, default=200, help="random-baseline placements")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for run in args.run_dirs:
        model, cfg = load_vta_run(run)
        t0 = time.process_time()
        ev = evaluate_boundaries(model, heldout_data(cfg), draws=args.draws, seed=int(cfg["seed"]))
        state = load_checkpoint(Path(run) / "checkpoints" / "latest.pt")
        ev.update(cpu_s=float(state["counters"]["cpu_s"]))
        print(format_eval_table(ev, name=f"{run} ({cfg['vta']['variant']}, {state['counters']['update']} updates)"))
        print(f"boundary options: {model.boundary_options()}; eval CPU {time.process_time() - t0:.1f} s\n")


if __name__ == "__main__":
    main()
