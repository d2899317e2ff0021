"""The known-boundary video family: ground truth checked on the frames, determinism, splits, configs."""

import time

import pytest
import torch

from imwm.envs.boundary_data import BoundaryDataStream, generate_boundary_data
from imwm.envs.boundary_videos import KINDS, generate_boundary_video

N, T, S = 24, 40, 32


def _pixels(td):
    px = td["observation"].permute(0, 1, 3, 4, 2).long()  # [N, T, S, S, 3]
    return px, px[..., 0] * 65536 + px[..., 1] * 256 + px[..., 2]


def _actor_mask(px):
    """Actor pixels: not grey (distractor, background stripes of the grey scene) and bright enough
    not to be a background (every scene colour is darker than the palette)."""
    grey = (px[..., 0] == px[..., 1]) & (px[..., 1] == px[..., 2])
    return ~grey & (px.max(-1).values > 100)


@pytest.mark.parametrize("distractor", [True, False])
def test_appearance_colour_changes_exactly_at_boundaries(distractor):
    td = generate_boundary_video(N, T, kind="appearance", image_size=S, seed=2, distractor=distractor)
    px, code = _pixels(td)
    actor = _actor_mask(px)
    colour = torch.where(actor, code, -1).flatten(2).max(-1).values  # the brightest actor colour of a frame
    assert (colour >= 0).all()
    tb = td["true_boundary"][..., 0]
    assert torch.equal(colour[:, 1:] != colour[:, :-1], tb[:, 1:])


def _centroids(td, size):
    px, _ = _pixels(td)
    actor = _actor_mask(px).float()
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    n = actor.sum((-1, -2))
    return torch.stack([(actor * xx).sum((-1, -2)) / n, (actor * yy).sum((-1, -2)) / n], -1)  # [N, T, 2]


def test_dynamics_displacement_changes_exactly_at_boundaries_and_recorded_bounces():
    # 128 px frames: motion is 4.5-7.7 px/frame, rasterisation moves a centroid by at most ~1.4 px
    size = 128
    td = generate_boundary_video(N, T, kind="dynamics", image_size=size, seed=3, object_size=(0.09, 0.14))
    c = _centroids(td, size)
    disp = c[:, 1:] - c[:, :-1]  # disp[:, t-1] = motion into frame t
    jump = (disp[:, 1:] - disp[:, :-1]).norm(dim=-1)  # change of motion at frames 2..T-1
    tb = td["true_boundary"][:, 2:, 0]
    # a bounce at frame t reflects part of the move into t and all of the move into t + 1
    b = td["actor_bounce"][..., 0]
    bounced = b[:, 2:] | b[:, 1:-1]
    assert bounced.sum() >= 40
    checked = ~bounced
    assert tb[checked].sum() >= 40 and (~tb[checked]).sum() >= 400
    assert (jump[checked & tb] > 3.5).all()  # a turn of >= 60 degrees at >= 4.5 px/frame
    assert (jump[checked & ~tb] < 1.5).all()  # otherwise only rasterisation jitter: no bounce went unrecorded
    assert (jump[b[:, 2:] & ~tb] > 1.5).float().mean() > 0.8  # and the recorded ones turn the motion
    assert not b[:, 0].any()
    # the looks never change: one actor colour per sequence
    px, code = _pixels(td)
    colour = torch.where(_actor_mask(px), code, -1).flatten(2).max(-1).values
    assert (colour == colour[:, :1]).all()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bounces_are_recorded_for_drawn_objects_only(kind):
    with_d = generate_boundary_video(N, T, kind=kind, image_size=S, seed=5)
    without = generate_boundary_video(N, T, kind=kind, image_size=S, seed=5, distractor=False)
    assert with_d["distractor_bounce"].any() and not without["distractor_bounce"].any()
    assert torch.equal(with_d["actor_bounce"], without["actor_bounce"])  # the distractor does not move the actor
    assert 0.02 < with_d["actor_bounce"].float().mean() < 0.3


def test_scene_cut_background_changes_exactly_at_boundaries():
    td = generate_boundary_video(N, T, kind="scene_cut", image_size=S, seed=4, object_size=(0.2, 0.28))
    px, code = _pixels(td)
    changed = (code[:, 1:] != code[:, :-1]).float().flatten(2).mean(-1)  # share of pixels that changed
    tb = td["true_boundary"][:, 1:, 0]
    assert (changed[tb] > 0.5).all() and (changed[~tb] < 0.5).all()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deterministic_disjoint_splits_and_fast(kind):
    kw = dict(kind=kind, image_size=S, seed=7)
    a, b = generate_boundary_video(3, 20, **kw), generate_boundary_video(3, 20, **kw)
    assert torch.equal(a["observation"], b["observation"]) and torch.equal(a["true_boundary"], b["true_boundary"])
    held = generate_boundary_video(3, 20, split="heldout", **kw)
    assert not any(torch.equal(a["observation"][i], held["observation"][j]) for i in range(3) for j in range(3))
    assert torch.equal(generate_boundary_video(2, 20, start_index=1, **kw)["observation"], a["observation"][1:])
    assert set(a.keys()) == {"observation", "true_boundary", "is_first", "action", "actor_bounce", "distractor_bounce"}
    t0 = time.process_time()
    generate_boundary_video(20, 32, kind=kind, image_size=S)
    assert (time.process_time() - t0) / 20 < 0.02  # a few ms per sequence


def test_kinds_differ_and_bad_arguments():
    obs = [generate_boundary_video(1, 10, kind=k, image_size=S)["observation"] for k in sorted(KINDS)]
    assert not torch.equal(obs[0], obs[1]) and not torch.equal(obs[1], obs[2])
    with pytest.raises(ValueError, match="kind"):
        generate_boundary_video(1, 10, kind="colour")
    with pytest.raises(ValueError, match="distractor"):
        generate_boundary_video(1, 10, distractor=1)


def test_config_sections_pick_the_dataset():
    d = {"kind": "dynamics", "image_size": S, "seq_len": 12, "batch_size": 2, "heldout_sequences": 3, "seed": 1,
         "object_size": [0.2, 0.28], "distractor": False}
    held = generate_boundary_data(d, 3, split="heldout")
    direct = generate_boundary_video(3, 12, kind="dynamics", image_size=S, seed=1, object_size=(0.2, 0.28),
                                     distractor=False, split="heldout")
    assert torch.equal(held["observation"], direct["observation"])
    assert torch.equal(BoundaryDataStream(d).batch(1)["observation"],
                       generate_boundary_data(d, 2, start_index=2)["observation"])
    with pytest.raises(ValueError, match="data.distractor"):
        generate_boundary_data({"kind": "moving_shapes", "seq_len": 8, "distractor": True}, 1)
    old = {"image_size": S, "seq_len": 8, "seed": 0}  # a config saved before data.kind existed
    assert generate_boundary_data(old, 1)["observation"].shape == (1, 8, 3, S, S)


@pytest.mark.parametrize("name", ["moving_shapes", "appearance", "dynamics", "scene_cut"])
def test_train_vta_data_group_and_heldout_regeneration(name, tmp_path):
    from imwm.analysis.rollout import heldout_moving_shapes
    from imwm.configs import compose_config
    from imwm.training.config import to_plain
    from imwm.training.vta_run import heldout_data, validate_vta_config

    cfg = to_plain(compose_config([f"data={name}", "data.heldout_sequences=2", f"run_dir={tmp_path}"],
                                  config_name="train_vta"))
    assert cfg["data"]["kind"] == name and cfg["name"].endswith(name)
    validate_vta_config(cfg)
    held = heldout_data(cfg)
    d = {k: v for k, v in cfg["data"].items() if k not in ("kind", "batch_size", "heldout_sequences")}
    if name == "moving_shapes":
        from imwm.envs.moving_shapes import generate_moving_shapes

        d["object_size"] = tuple(d["object_size"])
        direct = generate_moving_shapes(2, split="heldout", **d)
    else:
        direct = generate_boundary_video(2, kind=name, split="heldout", **{**d, "object_size": tuple(d["object_size"])})
    assert torch.equal(held["observation"], direct["observation"])
    # the analysis tools (vta_boundary_eval --run) regenerate the same sequences
    assert torch.equal(heldout_moving_shapes(cfg["data"], 2)["observation"], direct["observation"])


def test_train_vta_data_errors_name_the_key(tmp_path):
    from imwm.configs import compose_config
    from imwm.errors import ConfigError
    from imwm.training.config import to_plain
    from imwm.training.vta_run import validate_vta_config

    cfg = to_plain(compose_config(["data=dynamics", f"run_dir={tmp_path}"], config_name="train_vta"))
    cfg["data"]["distractor"] = "yes"
    with pytest.raises(ConfigError, match="data.distractor"):
        validate_vta_config(cfg)
    cfg["data"]["distractor"] = True
    cfg["data"]["kind"] = "colour"
    with pytest.raises(ConfigError, match="data.kind"):
        validate_vta_config(cfg)
    ms = to_plain(compose_config([f"run_dir={tmp_path}"], config_name="train_vta"))
    ms["data"]["distractor"] = False  # Moving Shapes always has its distractor
    with pytest.raises(ConfigError, match="data.distractor"):
        validate_vta_config(ms)
