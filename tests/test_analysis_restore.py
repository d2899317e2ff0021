import os

import pytest
import torch
import yaml
from torch import nn

from imwm.analysis.restore import (
    apply_overrides,
    check_state_dict_fits,
    detect_run_kind,
    load_run_config,
    parse_overrides,
)

SAVED = {
    "seed": 1,
    "env": {"name": "atari", "task": "breakout", "size": 64},
    "dynamics": {"name": "vta", "max_seg_len": 50, "boundary_force_scale": 10.0, "belief": 32},
    "agent": {"horizon": 15},
}


def test_parse_overrides_yaml_values():
    got = parse_overrides(["dynamics.max_seg_len=7", "--dynamics.boundary_force_scale=0.0",
                           "env.task=pong", "x=[1, 2]", "flag=true"])
    assert got == {"dynamics.max_seg_len": 7, "dynamics.boundary_force_scale": 0.0, "env.task": "pong",
                   "x": [1, 2], "flag": True}
    with pytest.raises(ValueError, match="must look like key=value"):
        parse_overrides(["dynamics.max_seg_len"])
    with pytest.raises(ValueError, match="only existing keys"):
        parse_overrides(["+new=1"])
    with pytest.raises(ValueError, match="given twice"):
        parse_overrides(["a=1", "a=2"])


def test_apply_overrides_reports_replaced_values_and_leaves_saved_untouched():
    new, changes = apply_overrides(SAVED, {"dynamics.boundary_force_scale": 0.0})
    assert new["dynamics"]["boundary_force_scale"] == 0.0
    assert new["dynamics"]["max_seg_len"] == 50  # the trained value, not a default
    assert SAVED["dynamics"]["boundary_force_scale"] == 10.0
    assert changes == [("dynamics.boundary_force_scale", 10.0, 0.0)]


def test_apply_overrides_refuses_unknown_group_and_geometry_keys():
    with pytest.raises(ValueError, match="'max_seg_len' is not a key.*did you mean dynamics.max_seg_len"):
        apply_overrides(SAVED, {"max_seg_len": 5})
    with pytest.raises(ValueError, match="names a group"):
        apply_overrides(SAVED, {"dynamics": 5})
    with pytest.raises(ValueError, match="env.size=96 refused: it changes the model's input shape"):
        apply_overrides(SAVED, {"env.size": 96})
    apply_overrides(SAVED, {"env.size": 64})  # the same value is harmless


def test_state_dict_fit_names_the_override():
    trained = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    bigger = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 2))
    check_state_dict_fits(trained, trained.state_dict())
    with pytest.raises(ValueError, match=r"dynamics.belief=64 \(trained: 32\).*refused.*0.weight"):
        check_state_dict_fits(bigger, trained.state_dict(), [("dynamics.belief", 32, 64)])
    with pytest.raises(ValueError, match="does not rebuild the saved weights.*not in the checkpoint"):
        check_state_dict_fits(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(2, 2)),
                              trained.state_dict())


def test_load_run_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run_config(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="never from defaults"):
        load_run_config(str(tmp_path))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"a": "${b}", "b": 1}))
    with pytest.raises(ValueError, match="not a resolved config"):
        load_run_config(str(tmp_path))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(SAVED))
    assert load_run_config(str(tmp_path)) == SAVED


def test_detect_run_kind():
    assert detect_run_kind(SAVED) == "agent"
    with pytest.raises(ValueError, match="cannot tell what trained this run"):
        detect_run_kind({"seed": 0})
