import pytest
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


def test_split_command_line_accepts_the_original_scripts_spelling():
    from imwm.analysis.restore import split_command_line

    cl = split_command_line(["--logdir", "runs/x", "--task", "atari_private_eye", "--configs", "atari100k",
                             "curious_replay", "--length", "30", "--vta_max_seg_len", "50",
                             "--vta_boundary_temp=2.0", "--vta_boundary_force_scale", "-1",
                             "--dynamics.max_seg_num=7", "a.b=1", "--delta_percentile", "90", "95"])
    assert cl.flags == ["--logdir", "runs/x", "--length", "30", "--delta_percentile", "90", "95"]
    assert cl.overrides == ["--dynamics.max_seg_num=7", "a.b=1"]
    assert cl.source_options == [("max_seg_len", "50"), ("boundary_temp", "2.0"), ("boundary_force_scale", "-1")]
    assert cl.saved_config_flags == {"--task": ["atari_private_eye"], "--configs": ["atari100k", "curious_replay"]}
    with pytest.raises(ValueError, match="--vta_max_seg_len needs a value"):
        split_command_line(["--vta_max_seg_len"])
    with pytest.raises(ValueError, match="--task needs a value"):
        split_command_line(["--task", "--length", "3"])


def test_source_options_map_to_the_run_kind_and_task_is_checked():
    from imwm.analysis.restore import source_option_overrides, split_command_line

    said = []
    cl = split_command_line(["--vta_max_seg_len", "50", "--task", "atari_breakout", "--configs", "atari100k"])
    assert source_option_overrides(cl, SAVED, run_dir="r", printer=said.append) == ["dynamics.max_seg_len=50"]
    assert said[0].startswith("note: --task atari_breakout --configs atari100k: not needed")
    assert "r/config.yaml" in said[0] and "env.task=breakout" in said[0]
    vta_run = {"vta": {"max_seg_len": 10}, "data": {"seq_len": 8}}
    assert source_option_overrides(split_command_line(["--vta_max_seg_len", "4"]), vta_run,
                                   printer=None) == ["vta.max_seg_len=4"]
    for task in ("breakout", "Breakout", "atari_breakout", "atari-breakout"):
        source_option_overrides(split_command_line(["--task", task]), SAVED, printer=None)
    cartpole = {**SAVED, "env": {"name": "cartpole", "task": "CartPole-v1"}}
    for task in ("cartpole", "CartPole-v1", "cartpole_CartPole-v1"):
        source_option_overrides(split_command_line(["--task", task]), cartpole, printer=None)
    with pytest.raises(ValueError, match="--task pong does not match this run.*env.task=breakout"):
        source_option_overrides(split_command_line(["--task", "pong"]), SAVED, printer=None)
    with pytest.raises(ValueError, match="--vta_max_seg: dynamics.max_seg is not a key.*max_seg_len"):
        source_option_overrides(split_command_line(["--vta_max_seg", "4"]), SAVED, printer=None)
