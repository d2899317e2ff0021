"""Detector-only training inside a frozen VTA model: only the new detector moves, for either variant."""

import json

import pytest
import torch

from imwm.analysis.detector_only import boundary_detector, fresh_detector, train_detector_only
from imwm.vta import VTAOriginal
from imwm.vta.sequence_model import VTASequenceModel


def _original():
    return VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8,
                       boundary_grad="local")


def _dreamer():
    return VTASequenceModel(image_size=16, cnn_depth=4, embed_dim=8, abs_belief_dim=8, obs_belief_dim=8,
                            abs_stoch_dim=2, obs_stoch_dim=2, hidden=8, boundary_hidden=8, boundary_grad="local")


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 255, (4, 6, 3, 16, 16), dtype=torch.uint8, generator=g)
    truth = torch.zeros(4, 6, 1)
    truth[:, 3] = 1
    return obs, truth


@pytest.mark.parametrize("build", [_original, _dreamer], ids=["original", "dreamer"])
def test_only_the_fresh_detector_learns_and_the_frozen_model_stays_as_trained(build):
    torch.manual_seed(0)
    model = build()
    old = boundary_detector(model)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "post_boundary." not in k}
    obs, truth = _data()
    curve = train_detector_only(model, lambda i: obs, {"observation": obs, "true_boundary": truth},
                                norm="batch", diff=True, causal=True, updates=3, eval_every=2, seed=1, lr=1e-2)
    new = boundary_detector(model)
    assert new is not old and (new.diff, new.causal, new.in_dim, new.hidden_dim) == (True, True, old.in_dim, old.hidden_dim)
    assert [r["update"] for r in curve] == [0, 2, 3]
    assert all(0.0 <= r["auc"] <= 1.0 and r["spread"] >= 0.0 and 0.0 < r["mean_q"] < 1.0 for r in curve)
    after = model.state_dict()
    changed = [k for k, v in frozen.items() if not torch.equal(v, after[k])]
    assert changed == [], f"frozen tensors moved: {changed}"  # running statistics of batch norms included
    init = fresh_detector(build(), norm="batch", diff=True, causal=True, seed=1).state_dict()
    moved = [k for k, v in new.state_dict().items() if v.is_floating_point() and not torch.equal(v, init[k])]
    assert any(k.endswith("weight") for k in moved), "the detector did not train"


def test_the_same_seed_gives_the_same_curve_and_bad_options_are_named():
    obs, truth = _data()
    curves = []
    for _ in range(2):
        torch.manual_seed(0)
        curves.append(train_detector_only(_original(), lambda i: obs, {"observation": obs, "true_boundary": truth},
                                          updates=2, eval_every=1, seed=3))
    strip = [[{k: v for k, v in r.items() if k != "cpu_s"} for r in c] for c in curves]
    assert strip[0] == strip[1]
    with pytest.raises(ValueError, match="norm must be one of"):
        fresh_detector(_original(), norm="group", diff=False, causal=False, seed=0)
    with pytest.raises(ValueError, match="eval_every"):
        train_detector_only(_original(), lambda i: obs, {"observation": obs, "true_boundary": truth}, eval_every=0)
    with pytest.raises(ValueError, match="no posterior boundary detector"):
        boundary_detector(torch.nn.Linear(2, 2))


def test_the_script_trains_a_detector_in_a_train_vta_run(tmp_path):
    from script_runner import run_script
    from test_vta_run import _cfg

    from imwm.training.vta_run import train

    sizes = ["vta=dreamer", "vta.abs_belief_dim=16", "vta.obs_belief_dim=16", "vta.abs_stoch_dim=4",
             "vta.obs_stoch_dim=4", "vta.hidden=16", "vta.boundary_hidden=8", "train.updates=2"]
    run = train(_cfg(tmp_path, *sizes))
    before = (run / "checkpoints" / "latest.pt").read_bytes()
    out = run_script(tmp_path, "vta_detector_only.py", "--run", str(run), "--updates", "2", "--eval_every", "1",
                     "--no-diff", "--norm", "layer", "--out_json", str(tmp_path / "curve.json"))
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "curve.json").read_text())
    assert [r["update"] for r in saved["curve"]] == [0, 1, 2]
    assert saved["options"] == {"norm": "layer", "diff": False, "causal": True, "lr": 1e-3, "seed": 0}
    assert "update 2: AUC" in out.stdout and "command: python scripts/vta_detector_only.py" in out.stdout
    assert (run / "checkpoints" / "latest.pt").read_bytes() == before  # the run folder is only read

