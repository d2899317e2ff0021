"""Fault injection on checkpoints and the update: bad files give one line naming the file and never
destroy the previous good state; non-finite values are skipped and never saved; files planted in a
run folder never run."""
import os
import warnings
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from imwm.agent.optimization import NonFiniteUpdateError
from imwm.training.build_replay import build_replay
from imwm.training.checkpoint import (CheckpointError, RunCheckpoint, load_checkpoint,
                                      load_latest, nonfinite_entries, save_checkpoint)
from imwm.training.history import record_config

MARKER_NAME = "planted_code_ran"


class Planted:
    """Unpickling this creates a marker file: proof that code from the run folder ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickles(folder: Path, marker: Path) -> list[Path]:
    """Pickles under every name a loader might open, in every sub-folder of ``folder``."""
    import pickle

    planted = []
    dirs = [folder, *[p for p in folder.rglob("*") if p.is_dir()]]
    for directory in dirs:
        for name in ("x.pkl", "prefetch.pkl", "transform.t", "evil.pt", "storage.memmap", "meta.pt"):
            path = directory / name
            if path.exists():
                continue
            with open(path, "wb") as f:
                pickle.dump(Planted(marker), f)
            planted.append(path)
    return planted


def records(n: int, start_traj: int = 0) -> TensorDict:
    traj = torch.arange(n) // 10 + start_traj
    return TensorDict({
        "observation": torch.randn(n, 3),
        "action": torch.zeros(n, 2),
        "reward": torch.randn(n, 1),
        "is_first": (torch.arange(n) % 10 == 0).unsqueeze(-1),
        "is_terminal": torch.zeros(n, 1, dtype=torch.bool),
        "is_last": (torch.arange(n) % 10 == 9).unsqueeze(-1),
        "traj_ids": traj,
    }, [n])


def buffer(kind: str = "uniform"):
    fracs = {"uniform": {"uniform": 1.0}, "curious": {"curious": 1.0}}[kind]
    return build_replay(capacity=200, batch_size=2, batch_length=4, fracs=fracs, seed=0)


def state(step: int, value: float = 1.0) -> dict:
    return {"agent": {"w": torch.full((3,), value)}, "counters": {"env_steps": step},
            "config": {"seed": 0}}


def two_generations(run_dir: Path, kind: str = "uniform"):
    store = RunCheckpoint(run_dir, required=("agent", "counters"))
    rb = buffer(kind)
    rb.extend(records(40))
    store.save(state(40, 1.0), rb)
    rb.extend(records(20, start_traj=4))
    store.save(state(60, 2.0), rb)
    return store


# ---------------------------------------------------------------- single files
def test_nonfinite_state_is_never_written_and_the_previous_file_survives(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, state(1))
    with pytest.raises(CheckpointError, match=r"non-finite values in agent\.w"):
        save_checkpoint(path, state(2, float("nan")))
    assert load_checkpoint(path)["counters"]["env_steps"] == 1
    assert not (tmp_path / "latest.pt.tmp").exists() and not (tmp_path / "previous.pt").exists()
    assert nonfinite_entries({"a": [1.0, float("inf")], "b": torch.tensor([1, 2])}) == ["a.1"]


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated", "bit_flip", "garbage", "missing_keys"])
def test_damaged_checkpoint_gives_one_line_naming_the_file(tmp_path, damage):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, state(1))
    data = path.read_bytes()
    if damage == "zero_bytes":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bit_flip":  # inside the zip's central directory, which torch reads first
        flipped = bytearray(data)
        flipped[-30] ^= 0xFF
        path.write_bytes(bytes(flipped))
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all\n" * 10)
    else:
        torch.save({"agent": {}}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, required=("agent", "counters", "config"))
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_load_latest_falls_back_to_previous_with_a_warning(tmp_path):
    save_checkpoint(tmp_path / "latest.pt", state(1))
    save_checkpoint(tmp_path / "latest.pt", state(2))
    (tmp_path / "latest.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match="latest.pt: empty file"):
        path, loaded = load_latest(tmp_path)
    assert path.name == "previous.pt" and loaded["counters"]["env_steps"] == 1


# ---------------------------------------------------------------- run generations
def test_run_checkpoint_restores_the_newest_pair(tmp_path):
    store = two_generations(tmp_path)
    rb = buffer()
    path, saved = store.restore(rb)
    assert path.name == "latest.pt" and saved["counters"]["env_steps"] == 60
    assert len(rb) == 60


@pytest.mark.parametrize("damage", ["latest_zero_bytes", "latest_missing", "replay_truncated",
                                    "replay_manifest_garbage", "replay_missing"])
def test_damage_to_the_newest_generation_falls_back_to_the_previous(tmp_path, damage):
    store = two_generations(tmp_path)
    if damage == "latest_zero_bytes":
        store.latest.write_bytes(b"")
    elif damage == "latest_missing":
        store.latest.unlink()
    elif damage == "replay_truncated":
        biggest = max((p for p in store.replay.iterdir() if p.name != "manifest.json"),
                      key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[:-7])
    elif damage == "replay_manifest_garbage":
        (store.replay / "manifest.json").write_text("{not json")
    else:
        import shutil

        shutil.rmtree(store.replay)
    rb = buffer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, saved = RunCheckpoint(tmp_path).restore(rb)
    assert path.name == "previous.pt" and saved["counters"]["env_steps"] == 40 and len(rb) == 40
    assert any("resuming from" in str(w.message) for w in caught)


def test_both_generations_damaged_is_one_line_listing_every_reason(tmp_path):
    store = two_generations(tmp_path)
    store.latest.write_bytes(b"")
    store.previous.write_bytes(b"xx")
    with pytest.raises(CheckpointError) as err:
        store.restore(buffer())
    message = str(err.value)
    assert "\n" not in message and "latest.pt" in message and "previous.pt" in message


@pytest.mark.parametrize("crash_at", range(1, 6))
def test_a_crash_between_any_two_renames_leaves_a_matching_pair(tmp_path, monkeypatch, crash_at):
    store = two_generations(tmp_path)
    rb = buffer()
    rb.extend(records(60))
    rb.extend(records(30, start_traj=6))
    calls = {"n": 0}
    real_replace = os.replace

    def crashing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise SystemExit("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(SystemExit):
        store.save(state(90, 3.0), rb)
    monkeypatch.setattr(os, "replace", real_replace)
    restored = buffer()
    path, saved = RunCheckpoint(tmp_path).restore(restored)
    step = saved["counters"]["env_steps"]
    assert step in (40, 60, 90)
    assert len(restored) == step
    assert torch.equal(saved["agent"]["w"], torch.full((3,), {40: 1.0, 60: 2.0, 90: 3.0}[step]))


@pytest.mark.parametrize("kind", ["uniform", "curious"])
def test_pickles_planted_anywhere_in_a_run_folder_never_run(tmp_path, kind):
    run_dir = tmp_path / "run"
    two_generations(run_dir, kind)
    marker = tmp_path / MARKER_NAME
    planted = plant_pickles(run_dir, marker)
    assert len(planted) > 10
    RunCheckpoint(run_dir).restore(buffer(kind))
    assert not marker.exists()


def test_a_full_disk_during_the_replay_write_keeps_the_last_generation(tmp_path, monkeypatch):
    store = two_generations(tmp_path)
    import imwm.training.snapshot as snapshot

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot, "save_replay", full)
    rb = buffer()
    rb.extend(records(80))
    with pytest.raises(CheckpointError, match=r"cannot write .*replay\.tmp: OSError: .*No space left"):
        store.save(state(80, 3.0), rb)
    monkeypatch.undo()
    assert not store.replay_tmp.exists()
    path, saved = RunCheckpoint(tmp_path).restore(buffer())
    assert path.name == "latest.pt" and saved["counters"]["env_steps"] == 60


def test_a_diverging_loss_is_reported_once_naming_the_learning_rates():
    from types import SimpleNamespace

    from imwm.training.loop import Trainer

    fake = SimpleNamespace(warned_losses=set(), counters={"updates": 12},
                           plain={"agent": {"model_lr": 1000.0, "actor_lr": 3e-5, "critic_lr": 3e-5}})
    with pytest.warns(UserWarning, match=r"world_model_loss reached 2.7e\+07 by update 12.*model_lr=1000"):
        Trainer._warn_large_losses(fake, {"world_model_loss": 2.7e7, "loss_actor": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer._warn_large_losses(fake, {"world_model_loss": 3e7})  # once per term


# ---------------------------------------------------------------- config history
def test_config_yaml_is_never_overwritten(tmp_path):
    record_config(tmp_path, {"seed": 0, "total_env_steps": 100}, None)
    (tmp_path / "config.yaml").write_text("seed: 0  # my note\ntotal_env_steps: 100\n")
    record_config(tmp_path, {"seed": 0, "total_env_steps": 200},
                  {"seed": 0, "total_env_steps": 100}, env_step=100)
    assert "# my note" in (tmp_path / "config.yaml").read_text()
    changes = (tmp_path / "config.changes-1.yaml").read_text()
    assert "total_env_steps: 100 -> 200" in changes and "env_step: 100" in changes
    (tmp_path / "config.yaml").write_text(": : not yaml [")
    with pytest.warns(UserWarning, match="unreadable"):
        record_config(tmp_path, {"seed": 0}, None)
    assert (tmp_path / "config.yaml").read_text() == ": : not yaml ["
    assert (tmp_path / "config.changes-2.yaml").exists()


# ---------------------------------------------------------------- the update
def tiny_agent(**kwargs):
    from omegaconf import OmegaConf

    from imwm.training.build_model import build_agent

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "agent" / "default.yaml")
    agent_cfg = {**OmegaConf.to_container(cfg), "horizon": 3, **kwargs}
    plain = {
        "model": {"deter": 16, "hidden": 16, "stoch": 4, "classes": 4, "cnn_depth": 4,
                  "mlp_units": 16, "mlp_layers": 1},
        "dynamics": {"name": "rssm"},
        "agent": agent_cfg,
    }
    return build_agent(plain, obs_shape=(4,), action_dim=2)


def replay_batch(b: int = 3, t: int = 5) -> TensorDict:
    return TensorDict({
        "observation": torch.randn(b, t, 4),
        "action": torch.nn.functional.one_hot(torch.randint(0, 2, (b, t)), 2).float(),
        "reward": torch.randn(b, t, 1),
        "is_first": torch.zeros(b, t, 1, dtype=torch.bool),
        "is_terminal": torch.zeros(b, t, 1, dtype=torch.bool),
        "is_last": torch.zeros(b, t, 1, dtype=torch.bool),
    }, [b, t])


def snapshot(agent) -> dict:
    return {
        "params": {k: v.clone() for k, v in agent.state_dict().items() if isinstance(v, torch.Tensor)},
        "opt": torch.utils._pytree.tree_map(
            lambda x: x.clone() if isinstance(x, torch.Tensor) else x, agent.optimizers_state_dict()),
    }


def assert_same(a, b):
    flat_a, _ = torch.utils._pytree.tree_flatten(a)
    flat_b, _ = torch.utils._pytree.tree_flatten(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("where", ["reward", "world_model_grad"])
def test_a_nan_update_is_skipped_counted_and_then_stops_the_run(where):
    agent = tiny_agent(max_nonfinite_updates=3)
    agent.train_step(replay_batch())  # optimiser states exist
    before = snapshot(agent)
    batch = replay_batch()
    if where == "reward":
        batch["reward"][0, 2] = float("nan")
        hook = None
    else:  # a finite loss whose gradient is NaN
        param = next(agent.world_model.parameters())
        hook = param.register_hook(lambda g: torch.full_like(g, float("nan")))
    with pytest.warns(UserWarning, match="non-finite world model"):
        metrics, _ = agent.train_step(batch)
    assert metrics["nonfinite_skipped"] == 1 and agent.nonfinite_total == 1
    assert_same(snapshot(agent), before)  # weights and Adam moments untouched
    with pytest.warns(UserWarning):
        agent.train_step(batch)
    with pytest.raises(NonFiniteUpdateError, match=r"update \d+: non-finite world model .*3 non-finite "
                                                   r"updates in a row \(agent\.max_nonfinite_updates=3\)"):
        agent.train_step(batch)
    assert_same(snapshot(agent), before)
    assert not nonfinite_entries(agent.state_dict())
    if hook is not None:
        hook.remove()
    metrics, _ = agent.train_step(replay_batch())  # a finite update resets the streak
    assert metrics["nonfinite_skipped"] == 0 and agent.nonfinite_streak == 0


def test_a_nan_behaviour_loss_skips_only_actor_and_critic():
    agent = tiny_agent()
    agent.train_step(replay_batch())
    actor_before = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    param = next(agent.critic.parameters())
    hook = param.register_hook(lambda g: torch.full_like(g, float("inf")))
    with pytest.warns(UserWarning, match="non-finite behaviour gradient norm"):
        metrics, _ = agent.train_step(replay_batch())
    hook.remove()
    assert metrics["nonfinite_skipped"] == 1 and "world_model_loss" in metrics
    for k, v in agent.actor.state_dict().items():
        assert torch.equal(v, actor_before[k])


@pytest.mark.parametrize("streams", [1, 2])
def test_nonfinite_replay_records_are_never_written_and_the_last_generation_survives(tmp_path, streams):
    # a NaN reward in a written record: the store refuses the generation naming the leaf, writes no
    # replay folder, and the previous snapshot and checkpoint stay the ones a restore finds
    def make():
        return build_replay(capacity=200, batch_size=2, batch_length=4, num_streams=streams, seed=0)

    rb, first = make(), records(20)
    rows = rb.extend(first.clone())
    store = RunCheckpoint(tmp_path / "run", required=("agent", "counters"))
    store.save(state(20, 1.0), rb)
    bad = records(20, start_traj=4)
    bad["reward"][3] = float("nan")
    rb.extend(bad)
    with pytest.raises(CheckpointError, match=r"replay leaf \('reward',\) holds a NaN or infinity in rows"):
        store.save(state(40, 2.0), rb)
    assert not store.replay_tmp.exists()
    restored = make()
    path, saved = RunCheckpoint(tmp_path / "run").restore(restored)
    assert saved["counters"]["env_steps"] == 20
    assert torch.equal(restored.storage._storage["reward"][rows], first["reward"])
