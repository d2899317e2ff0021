"""The package works outside the repository: the configs and the commands are in the wheel.

Fast: a wheel built from the sources holds every config yaml, ``py.typed``, the ``imwm.cli``
modules and the six console scripts; the Hydra entry point finds its configs from a foreign working
directory; ``configs`` at the repo root is a symlink to ``imwm/configs``.
Slow: ``scripts/check_install.sh``, a fresh venv with a normal install, trains / evaluates / plots.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator

import pytest

from imwm.configs import CONFIG_DIR, compose_config
from script_runner import ROOT  # noqa: E402  (tests dir is on sys.path)

SCRIPTS = {
    "imwm-train": "imwm.cli.train:cli",
    "imwm-train-vta": "imwm.cli.train_vta:cli",
    "imwm-eval": "imwm.cli.evaluate:cli",
    "imwm-plot": "imwm.cli.plot:cli",
    "imwm-vta-viz": "imwm.cli.vta_boundary_viz:cli",
    "imwm-vta-eval": "imwm.cli.vta_boundary_eval:cli",
    "imwm-vta-detector": "imwm.cli.vta_detector_only:cli",
    "imwm-vta-reads": "imwm.cli.vta_read_placement:cli",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Iterator[zipfile.ZipFile]:
    """A wheel built offline from a clean copy of the sources (no stale build/ of the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "imwm", src / "imwm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          str(src), "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = (tmp / "dist").glob("imwm-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_wheel_holds_every_config_yaml_and_py_typed(wheel):
    names = set(wheel.namelist())
    yamls = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "imwm" / "configs").rglob("*.yaml"))
    assert "imwm/configs/config.yaml" in yamls and "imwm/configs/train_vta.yaml" in yamls
    presets = [y for y in yamls if y.startswith("imwm/configs/preset/")]
    assert {"imwm/configs/preset/debug.yaml", "imwm/configs/preset/laptop.yaml"} <= set(presets)
    missing = [y for y in yamls if y not in names]
    assert not missing, f"config files left out of the wheel: {missing}"
    for name in ("imwm/py.typed", "imwm/configs/__init__.py", "imwm/cli/__init__.py",
                 *(f"imwm/cli/{target.split(':')[0].rsplit('.', 1)[1]}.py" for target in SCRIPTS.values())):
        assert name in names, name
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "configs/"))]


def test_wheel_declares_the_console_scripts(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["console_scripts"]) == SCRIPTS


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_console_script_targets_exist(command):
    import importlib

    module, function = SCRIPTS[command].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_configs_symlink_at_the_repo_root():
    link = ROOT / "configs"
    assert link.is_symlink() and os.readlink(link) == "imwm/configs"
    assert link.resolve() == CONFIG_DIR
    if (ROOT / ".git").exists():  # git stores it as a symlink (mode 120000), not a folder
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s", "configs"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout:
            assert out.stdout.split()[0] == "120000", out.stdout


def test_compose_config_reads_the_package():
    cfg = compose_config(["preset=debug", "seed=3"])
    assert cfg.total_env_steps == 300 and cfg.seed == 3 and str(cfg.run_dir).startswith("runs/")
    assert compose_config(["train.updates=2"], config_name="train_vta").train.updates == 2


def test_hydra_entry_point_finds_its_configs_from_another_cwd(tmp_path):
    """``python -m imwm.cli.train --cfg job`` in an empty folder: configs from pkg://imwm.configs,
    nothing written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "IMWM_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-m", "imwm.cli.train", "--cfg", "job", "preset=debug", "seed=7"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "total_env_steps: 300" in out.stdout and "seed: 7" in out.stdout
    info = subprocess.run([sys.executable, "-m", "imwm.cli.train", "--info", "searchpath"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "pkg://imwm.configs" in info.stdout, info.stdout[-3000:] + info.stderr[-3000:]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_check_install_script(tmp_path):
    """``scripts/check_install.sh``: fresh venv, ``pip install`` (not editable), then imwm-train /
    imwm-eval / imwm-plot from a folder outside the repo (minutes: it installs every dependency)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "check_install.sh"), str(tmp_path / "pkgcheck")],
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    assert out.stdout.strip().splitlines()[-1].startswith("check_install: OK"), out.stdout[-3000:]
    work = tmp_path / "pkgcheck" / "work"
    assert (work / "ep.gif").stat().st_size > 0 and (work / "c.png").stat().st_size > 0
    (run,) = (work / "runs").glob("cartpole-CartPole-v1-rssm-s0-*")
    assert (run / "checkpoints" / "latest.pt").exists() and (run / "metrics.csv").exists()
    shutil.rmtree(tmp_path / "pkgcheck", ignore_errors=True)  # the venv is large


def test_gpu_check_script_parses_and_its_limits_fit_eight_minutes():
    """``scripts/gpu_check.sh`` cannot run without a GPU; at least it must parse, and the time
    limits of its sequential steps (``step "<title>" <s>``, ``bench <size> <mode> <s>``) plus the
    default limit of the compiled variants, which run side by side, must add up to at most 490 s,
    the ~8 minutes it promises."""
    script = ROOT / "scripts" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    limits = [int(s) for s in re.findall(r'^\s*step "[^"]*" (\d+) ', text, flags=re.M)]
    limits += [int(s) for s in re.findall(r"^\s*bench \S+ \S+ (\d+)$", text, flags=re.M)]
    assert len(limits) >= 6, f"expected setup, tests, two benchmarks and the Atari steps, found {limits}"
    (compiled,) = re.findall(r"^COMPILE_LIMIT=\$\{COMPILE_LIMIT:-(\d+)\}$", text, flags=re.M)
    total = sum(limits) + int(compiled)
    assert total <= 490, f"step limits {limits} and {compiled} s for the compiled variants add up to {total} s"


def _bash_array(text: str, name: str) -> list[str]:
    body = re.search(rf"^{name}=\(([^)]*)\)", text, flags=re.M | re.S)
    assert body, f"no {name}=( ... ) in scripts/gpu_wheels.sh"
    return body.group(1).split()


def test_gpu_wheels_cover_every_dependency_at_accepted_versions():
    """``scripts/gpu_wheels.sh`` fetches, for an offline CUDA machine, what its image lacks: every
    runtime dependency of imwm must be fetched at pyproject's pin or expected there, and every
    requirement of a fetched package (as installed here) fetched at a version it accepts, or
    expected."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def runtime_requirements(dist: str) -> list[Requirement]:  # installed metadata, no extras
        reqs = map(Requirement, requires(dist) or [])
        return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": "", "python_version": "3.12"})]

    text = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    fetched = {canonicalize_name(p.split("==")[0]): p.split("==")[1]
               for p in _bash_array(text, "WHEELS") + _bash_array(text, "SDISTS")}
    expected = {canonicalize_name(p) for p in _bash_array(text, "EXPECTED")}
    not_needed = {"wandb", "hydra-joblib-launcher", "hydra-submitit-launcher"}  # CSV logger; sweeps
    for dep in runtime_requirements("imwm"):  # pyproject's dependencies, as installed
        name = canonicalize_name(dep.name)
        if name in not_needed or name in expected:
            continue
        assert name in fetched, f"pyproject dependency {dep} is neither fetched nor expected on the GPU machine"
        pins = [s.version for s in dep.specifier if s.operator == "=="]
        assert not pins or pins == [fetched[name]], f"{name}: pyproject pins {pins}, gpu_wheels.sh {fetched[name]}"
    for name in fetched:
        try:
            needs = runtime_requirements(name)
        except PackageNotFoundError:
            pytest.fail(f"gpu_wheels.sh fetches {name}, which is not installed here")
        for req in needs:
            dep = canonicalize_name(req.name)
            assert dep in fetched or dep in expected, f"{name} needs {req}: fetch it or expect it"
            if dep in fetched:
                assert req.specifier.contains(fetched[dep]), f"{name} needs {req}, gpu_wheels.sh has {fetched[dep]}"
