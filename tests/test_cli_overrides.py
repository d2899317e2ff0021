"""A command line Hydra cannot compose is refused in one line naming the key, before Hydra starts."""

import sys

import pytest

from imwm.cli import train, train_vta
from imwm.cli.overrides import check_command_line
from imwm.errors import ConfigError


@pytest.mark.parametrize("argv, config_name, start", [
    (["agent.nokey=3"], "config", "agent.nokey: Could not override 'agent.nokey'."),
    (["preset=debug", "preset=nope"], "config", "preset: no config option 'nope' (available: atari, "),
    (["seed=0,1"], "config", "seed: Ambiguous value for argument 'seed=0,1'"),
    (["+agent.model_lr=3"], "config", "agent.model_lr: Could not append to config."),
    (["agent.model_lr"], "config", "agent.model_lr: Error parsing override"),
    (["data=nope"], "train_vta", "data: no config option 'nope' (available: appearance, dynamics, "),
    (["vta=dreamer", "data.distractor=1"], "train_vta", "data.distractor: Could not override"),
])
def test_a_command_line_hydra_cannot_compose_is_one_config_error(argv, config_name, start):
    with pytest.raises(ConfigError) as err:
        check_command_line(argv, config_name=config_name)
    assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("argv", [
    ["preset=debug", "seed=3", "+agent.nothing_yet=1", "hydra.run.dir=elsewhere"],  # composes: nothing to say
    ["-m", "seed=0,1", "agent.nokey=3"],  # Hydra's own flags: Hydra parses and reports
    ["--help"],
])
def test_good_command_lines_and_hydra_flags_pass_through(argv):
    check_command_line(argv, config_name="config")


@pytest.mark.parametrize("module, argv", [(train, ["preset=nope"]), (train_vta, ["vta=nope"])])
def test_the_entry_points_exit_2_with_the_line_before_hydra_runs(module, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    monkeypatch.delenv("IMWM_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(module, "main", lambda: pytest.fail("Hydra ran a command line it cannot compose"))
    with pytest.raises(SystemExit) as done:
        module.cli()
    assert done.value.code == 2
    assert capsys.readouterr().err.startswith(f"imwm: error: {argv[0].split('=')[0]}: no config option 'nope'")
