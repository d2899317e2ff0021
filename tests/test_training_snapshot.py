"""Replay snapshots (imwm.training.snapshot): exact round trip, no unpickling, damage detection."""
import json
import pickle

import pytest
import torch
from tensordict import TensorDict

from imwm.training.build_replay import build_replay, replay_feedback
from imwm.training.snapshot import SnapshotError, load_replay, read_replay_tag, save_replay

T, B, CAP = 4, 3, 80
KINDS = ("uniform", "uniform_streams", "curious", "mixture")


def _build(kind, seed=0, **over):
    common = dict(capacity=CAP, batch_size=B, batch_length=T, seed=seed) | over
    if kind == "uniform":
        return build_replay(**common)
    if kind == "uniform_streams":
        return build_replay(num_streams=2, **common)
    if kind == "curious":
        return build_replay(fracs={"curious": 1.0, "uniform": 0.0},
                            curious={"c": 10.0, "entropy_lambda": 0.1}, **common)
    return build_replay(fracs={"explore": 0.4, "exploit": 0.4, "uniform": 0.2},
                        explore_exploit={"eps": 1e-6}, trend={"enable": True, "k": 5.0},
                        **common)


def _records(step, n=6):
    """Two envs' chunks of ``n`` records each (episodes of 13 steps), every dtype kind."""
    parts = []
    for env in range(2):
        t = torch.arange(step * n, (step + 1) * n)
        parts.append(TensorDict({
            "traj_ids": env * 1000 + t // 13,
            "t": t,
            "is_last": (t % 13) == 12,
            "reward": torch.rand(n, 1),
            "observation": torch.randint(0, 255, (n, 3, 2, 2), dtype=torch.uint8),
            "next": {"stoch": torch.randn(n, 2).to(torch.bfloat16)},
        }, [n]))
    return torch.cat(parts)


def _fill(rb, steps=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        rb.extend(_records(step))
        if len(rb) < 40:
            continue
        _, info = rb.sample(return_info=True)
        signals = TensorDict({k: torch.rand(B, generator=g) for k in ("model_loss", "kl",
                                                                     "entropy")}, [B])
        replay_feedback(rb, info, signals, reward=torch.rand(3, generator=g))
    return rb


def _assert_same(x, y, path="state"):
    if isinstance(x, dict):
        assert set(x) == set(y), path
        for k in x:
            _assert_same(x[k], y[k], f"{path}/{k}")
    elif isinstance(x, torch.Tensor):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert torch.equal(x.view(torch.uint8) if x.dtype.itemsize == 1 else x, y), path
    else:
        assert x == y, path


def _assert_same_storage(a, b, rows=None):
    ta, tb = a.storage._storage, b.storage._storage
    if rows is not None:
        ta, tb = ta[rows], tb[rows]
    keys = set(ta.keys(include_nested=True, leaves_only=True))
    assert keys == set(tb.keys(include_nested=True, leaves_only=True))
    for key in keys:  # bit for bit (rows never written are saved as zeros)
        x, y = ta[key], tb[key]
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert torch.equal(x.contiguous().view(-1).view(torch.uint8),
                           y.contiguous().view(-1).view(torch.uint8)), key


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_restores_storage_sampler_writer_and_rng(tmp_path, kind):
    rb = _fill(_build(kind))
    assert save_replay(rb, tmp_path / "replay", tag="step-48") == tmp_path / "replay"
    assert read_replay_tag(tmp_path / "replay") == "step-48"
    fresh = _build(kind, seed=123)
    assert load_replay(fresh, tmp_path / "replay") == "step-48"

    assert len(fresh) == len(rb)
    _assert_same_storage(rb, fresh)
    _assert_same(rb.sampler.state_dict(), fresh.sampler.state_dict())
    _assert_same(rb.writer.state_dict(), fresh.writer.state_dict())
    assert type(fresh.writer) is type(rb.writer)
    if kind == "mixture":
        assert fresh.sampler.trend.gate == rb.sampler.trend.gate
    # same generator state: the same next batches; the same next write positions
    for _ in range(2):
        _, i1 = rb.sample(return_info=True)
        _, i2 = fresh.sample(return_info=True)
        assert torch.equal(i1["index"][0], i2["index"][0])
    new = _records(20)
    assert torch.equal(rb.extend(new.clone()), fresh.extend(new.clone()))
    assert len(fresh) == len(rb)
    _assert_same_storage(rb, fresh)


@pytest.mark.parametrize("kind", ("uniform", "uniform_streams"))
def test_empty_buffer_round_trip(tmp_path, kind):
    rb = _build(kind)
    save_replay(rb, tmp_path / "replay", tag="empty")
    fresh = _build(kind, seed=9)
    assert load_replay(fresh, tmp_path / "replay") == "empty"
    assert len(fresh) == 0 and not fresh.storage.initialized
    new = _records(0)
    rows = rb.extend(new.clone())
    assert torch.equal(rows, fresh.extend(new.clone()))
    _assert_same_storage(rb, fresh, rows)  # fresh allocations: only written rows are defined


@pytest.mark.parametrize("kind", ("uniform", "uniform_streams"))
def test_rows_never_written_are_saved_as_zeros_and_written_ones_must_be_finite(tmp_path, kind):
    rb = _build(kind)
    rb.extend(_records(0, n=5))  # 10 of 80 rows: a prefix, or a few rows of each of two rings
    written = torch.zeros(CAP, dtype=torch.bool)
    for a, b in (rb.writer.written_rows() if kind == "uniform_streams" else [(0, 10)]):
        written[a:b] = True
    assert int(written.sum()) == 10
    reward = rb.storage._storage["reward"]
    reward[~written] = float("nan")  # what an uninitialised allocation may hold
    save_replay(rb, tmp_path / "replay", tag="t")
    fresh = _build(kind, seed=1)
    load_replay(fresh, tmp_path / "replay")
    got = fresh.storage._storage
    assert torch.equal(got["reward"][written], reward[written])
    assert (got["reward"][~written] == 0).all() and (got["observation"][~written] == 0).all()
    if kind == "uniform_streams":
        assert fresh.writer.written_rows() == rb.writer.written_rows()

    reward[written.nonzero()[3]] = float("inf")
    with pytest.raises(ValueError, match=r"replay leaf \('reward',\) holds a NaN or infinity"):
        save_replay(rb, tmp_path / "bad", tag="t")
    assert not (tmp_path / "bad").exists()  # refused before the folder was made


def test_stream_rings_count_as_full_in_a_state_saved_without_their_fill():
    rb = _build("uniform_streams")
    rb.extend(_records(0, n=5))
    state = rb.writer.state_dict()
    del state["streams"]["filled"]
    rb.writer.load_state_dict(state)
    assert rb.writer.written_rows() == [(0, 40), (40, 80)]


def test_load_into_a_used_buffer_and_into_a_plain_uniform_one(tmp_path):
    rb = _fill(_build("uniform_streams"))
    save_replay(rb, tmp_path / "replay", tag="t")
    used = _build("uniform_streams")
    used.extend(_records(30))  # already initialised: data is copied in place
    load_replay(used, tmp_path / "replay")
    _assert_same_storage(rb, used)
    assert len(used) == len(rb)
    # scripts/bench_intrinsic.py reads a streamed run's replay into a default buffer
    plain = _build("uniform")
    load_replay(plain, tmp_path / "replay")
    assert torch.equal(plain.storage[: len(rb)]["t"], rb.storage[: len(rb)]["t"])


def test_save_refuses_a_non_empty_folder_and_bad_capacity_is_refused(tmp_path):
    rb = _fill(_build("uniform"), steps=2)
    (tmp_path / "replay").mkdir()
    (tmp_path / "replay" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        save_replay(rb, tmp_path / "replay", tag="t")
    save_replay(rb, tmp_path / "ok", tag="t")
    with pytest.raises(SnapshotError, match="capacity"):
        load_replay(_build("uniform", capacity=CAP * 2), tmp_path / "ok")
    with pytest.raises(FileNotFoundError):
        load_replay(_build("uniform"), tmp_path / "missing")
    assert read_replay_tag(tmp_path / "missing") is None


class _Evil:
    """Unpickling it creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickles_are_never_executed(tmp_path):
    rb = _fill(_build("curious"))
    snap = tmp_path / "replay"
    save_replay(rb, snap, tag="t")
    marker = tmp_path / "pwned"
    # the planted payload really runs when unpickled
    pickle.loads(pickle.dumps(_Evil(tmp_path / "sanity")))
    assert (tmp_path / "sanity").exists()

    payload = pickle.dumps(_Evil(marker))
    (snap / "storage").mkdir()
    for name in ("storage/x.pkl", "prefetch.pkl", "x.memmap", "storage/observation.memmap",
                 "buffer_metadata.json"):
        (snap / name).write_bytes(payload)
    for name in ("transform.t", "extra.pt", "storage/sampler_state.pt"):
        torch.save({"x": _Evil(marker)}, snap / name)
    fresh = _build("curious", seed=1)
    load_replay(fresh, snap)  # unlisted files are ignored, never opened
    assert not marker.exists()
    _assert_same_storage(rb, fresh)

    # A state file replaced by a pickle, with the manifest rewritten to match: the weights-only
    # reader refuses it.
    import hashlib

    torch.save({"x": _Evil(marker)}, snap / "sampler.pt")
    data = (snap / "sampler.pt").read_bytes()
    manifest = json.loads((snap / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == "sampler.pt":
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (snap / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="weights-only") as err:
        load_replay(_build("curious"), snap)
    assert str(snap / "sampler.pt") in str(err.value)
    assert not marker.exists()


def _damage_cases():
    def truncate(p):
        p.write_bytes(p.read_bytes()[:-5])

    def zero(p):
        p.write_bytes(b"")

    def flip(p):
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x01
        p.write_bytes(bytes(data))

    def missing(p):
        p.unlink()

    return {"truncated": (truncate, "truncated"), "zero-byte": (zero, "truncated"),
            "bit-flip": (flip, "sha256"), "missing": (missing, "missing")}


@pytest.mark.parametrize("case", list(_damage_cases()))
def test_damaged_files_are_refused_naming_the_file(tmp_path, case):
    rb = _fill(_build("mixture"), steps=4)
    snap = tmp_path / "replay"
    save_replay(rb, snap, tag="t")
    manifest = json.loads((snap / "manifest.json").read_text())
    damage, expected = _damage_cases()[case]
    observation = next(e["name"] for e in manifest["files"] if e["key"] == ["observation"])
    for name in (observation, "writer.pt"):
        target = snap / name
        backup = target.read_bytes()
        damage(target)
        with pytest.raises(SnapshotError, match=expected) as err:
            load_replay(_build("mixture"), snap)
        message = str(err.value)
        assert "\n" not in message and str(target) in message
        target.write_bytes(backup)
    load_replay(_build("mixture"), snap)  # intact again


def test_bad_or_missing_manifest_and_old_format_are_refused(tmp_path):
    rb = _fill(_build("uniform"), steps=3)
    snap = tmp_path / "replay"
    save_replay(rb, snap, tag="t")
    manifest = snap / "manifest.json"
    good = manifest.read_bytes()

    manifest.write_bytes(b"{not json")
    with pytest.raises(SnapshotError, match="not valid JSON") as err:
        load_replay(_build("uniform"), snap)
    assert str(manifest) in str(err.value) and "\n" not in str(err.value)
    assert read_replay_tag(snap) is None

    data = json.loads(good)
    data["files"][0]["dtype"] = "object"
    manifest.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match="not allowed"):
        load_replay(_build("uniform"), snap)

    for field, value, expected in (("dtype", ["float32"], "not allowed"), ("dtype", {"a": 1}, "not allowed"),
                                   ("kind", ["tensor"], "unknown kind")):
        data = json.loads(good)  # unhashable values get the same one-line refusal, not a TypeError
        data["files"][0][field] = value
        manifest.write_text(json.dumps(data))
        with pytest.raises(SnapshotError, match=expected):
            load_replay(_build("uniform"), snap)

    data = json.loads(good)
    data["files"][0]["name"] = "../outside.bin"
    manifest.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match="unsafe"):
        load_replay(_build("uniform"), snap)

    data = json.loads(good)
    observation = next(e for e in data["files"] if e["key"] == ["observation"])
    observation["shape"][-1] += 1  # shape no longer matches the byte size
    manifest.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match="is not .* bytes"):
        load_replay(_build("uniform"), snap)

    manifest.unlink()
    with pytest.raises(SnapshotError, match="missing") as err:
        load_replay(_build("uniform"), snap)
    assert str(manifest) in str(err.value)

    old = tmp_path / "old"
    rb.dumps(old)  # TorchRL's own format
    with pytest.raises(SnapshotError, match="old-format.*unpickling.*cannot be loaded safely"):
        load_replay(_build("uniform"), old)


def test_a_snapshot_that_does_not_fit_leaves_the_buffer_unchanged(tmp_path):
    save_replay(_fill(_build("uniform")), tmp_path / "plain", tag="plain")  # SliceSampler: {}
    good = _fill(_build("uniform_streams"), seed=3)
    save_replay(good, tmp_path / "good", tag="good")
    rb = _build("uniform_streams")
    with pytest.raises(SnapshotError, match="sampler state does not fit") as err:
        load_replay(rb, tmp_path / "plain")
    assert str(tmp_path / "plain" / "sampler.pt") in str(err.value)
    assert len(rb) == 0 and not rb.storage.initialized
    _assert_same(rb.sampler.state_dict(), _build("uniform_streams").sampler.state_dict())
    assert load_replay(rb, tmp_path / "good") == "good"  # the caller's fallback to another one
    _assert_same_storage(good, rb)
    _assert_same(good.sampler.state_dict(), rb.sampler.state_dict())
    _assert_same(good.writer.state_dict(), rb.writer.state_dict())
