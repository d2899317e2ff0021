"""imwm's samplers, intrinsic transforms, VTA boundary constants and dormant monitor, used the TorchRL way.

Modelled on what TorchRL's generic sampler / transform tests check: buffers sharing one storage,
a sampler built over a filled storage, the per-step flags of ``sample(return_info=True)``,
priority updates through ``TensorDictReplayBuffer.update_tensordict_priority``, transforms inside
``Compose`` (``_call`` and ``forward``) and as a replay buffer's transform, independent clones.
Where imwm deliberately differs from TorchRL the test says so (``# differs from TorchRL``).
"""

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import LazyTensorStorage, ReplayBuffer, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import PrioritizedSampler, SliceSampler
from torchrl.envs.transforms import Compose

import imwm.vta
from imwm.diagnostics import DormantMonitor
from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward
from imwm.replay import (
    CuriousSampler,
    ExploreExploitSampler,
    MixtureSampler,
    OnlineQueue,
    StreamWriter,
    TrendMixture,
    UniformSliceSampler,
)
from imwm.replay.composite import slice_leaves
from imwm.vta import BOUNDARY_COPY, BOUNDARY_READ, COPY_INDEX, READ_INDEX, VTADynamics
from imwm.vta.boundary import regularize_boundary

N, T, B = 40, 4, 3
SAMPLERS = ["curious", "explore", "exploit", "uniform", "mixture", "trend", "online"]
# the per-slice signal each prioritised sampler is fed (its priority_key); None: not prioritised
SIGNAL = {"curious": "model_loss", "explore": "kl", "exploit": "kl", "mixture": "model_loss",
          "trend": "kl", "uniform": None, "online": None}


def make_sampler(kind, **kw):
    kw = {"slice_len": T, **kw}
    if kind == "curious":
        return CuriousSampler(N, **kw)
    if kind in ("explore", "exploit"):
        return ExploreExploitSampler(N, mode=kind, **kw)
    if kind == "uniform":
        return UniformSliceSampler(N, **kw)
    if kind == "mixture":
        return MixtureSampler({"curious": CuriousSampler(N, **kw), "uniform": UniformSliceSampler(N, **kw)},
                              {"curious": 0.5, "uniform": 0.5})
    if kind == "trend":
        return TrendMixture(ExploreExploitSampler(N, mode="explore", **kw),
                            ExploreExploitSampler(N, mode="exploit", **kw))
    return OnlineQueue(UniformSliceSampler(N, window="stream", **kw))


def records(n, start=0, episode=10):
    """A collector's layout: ("collector", "traj_ids"), ("next", "done" / "terminated"), is_init."""
    t = torch.arange(start, start + n)
    last = (t % episode == episode - 1).unsqueeze(-1)
    return TensorDict({
        "collector": {"traj_ids": t // episode},
        "t": t,
        "is_init": (t % episode == 0).unsqueeze(-1),
        "next": {"done": last, "terminated": last & (t % 20 == 19).unsqueeze(-1)},
    }, [n])


def buffer(sampler, storage, **kw):
    return TensorDictReplayBuffer(storage=storage, sampler=sampler, batch_size=B * T,
                                  generator=torch.Generator().manual_seed(0), **kw)


def assert_slices_are_contiguous(batch, same_trajectory=True):
    t = batch["t"].view(-1, T)
    assert (t.diff(dim=1) == 1).all(), "a slice crossed a write head"
    if same_trajectory:
        ids = batch["collector", "traj_ids"].view(-1, T)
        assert (ids == ids[:, :1]).all(), "a slice crossed a trajectory boundary"


# ----------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("kind", SAMPLERS)
def test_writes_through_another_buffer_sharing_the_storage_are_seen(kind):
    storage = LazyTensorStorage(N)
    mine = buffer(make_sampler(kind), storage)
    other = TensorDictReplayBuffer(storage=storage, batch_size=5)  # TorchRL's own writer + sampler
    other.extend(records(25))
    batch = mine.sample()
    assert len(mine) == 25
    assert_slices_are_contiguous(batch, same_trajectory=kind != "online")
    other.extend(records(30, start=25))  # wraps past the capacity: the head is mid-storage now
    for _ in range(10):
        assert_slices_are_contiguous(mine.sample(), same_trajectory=kind != "online")
    # the owning buffer's own write reaches the sampler twice (mark_update, extend): counted once
    leaf = slice_leaves(mine.sampler)[0]
    before = leaf._writes
    mine.extend(records(5, start=55))
    assert leaf._writes == before + 5


@pytest.mark.parametrize("kind", SAMPLERS)
def test_a_new_sampler_over_a_filled_storage_sets_itself_up(kind):
    storage = LazyTensorStorage(N)
    writer = TensorDictReplayBuffer(storage=storage, batch_size=5)
    writer.extend(records(55, episode=1000))  # one trajectory over the wrap: only the head can stop a slice
    late = buffer(make_sampler(kind), storage)
    for _ in range(10):
        assert_slices_are_contiguous(late.sample(), same_trajectory=False)
    # no write went through it, yet it reads the sampler's signal (not td_error) from its samples
    assert late.priority_key == (SIGNAL[kind] or "td_error")
    for leaf in slice_leaves(late.sampler):
        assert int(leaf._valid.sum()) == N - T + 1  # every window but those across the head
        if leaf.signal_key is not None:
            # unseen records start at the default priority: no feedback yet -> initial (inf)
            fresh = ~leaf._has_signal
            assert fresh.any() and torch.isinf(leaf.priorities(torch.nonzero(fresh).flatten())).all()


def test_several_rings_cannot_be_taken_in_and_say_why():
    storage = LazyTensorStorage(N)
    writer = TensorDictReplayBuffer(storage=storage, writer=StreamWriter(2), batch_size=4)
    writer.extend(TensorDict({"traj_ids": torch.tensor([0] * 6 + [1] * 6)}, [12]))
    late = buffer(UniformSliceSampler(N, slice_len=T, num_streams=2), storage)
    with pytest.raises(RuntimeError, match="load the sampler's state_dict"):
        late.sample()


@pytest.mark.parametrize("kind", SAMPLERS)
def test_sample_info_carries_the_step_flags_of_torchrl_slice_sampler(kind):
    storage = LazyTensorStorage(N)
    rb = buffer(make_sampler(kind), storage)
    rb.extend(records(N))
    batch, info = rb.sample(return_info=True)
    reference = TensorDictReplayBuffer(storage=storage, sampler=SliceSampler(slice_len=T), batch_size=B * T)
    _, torchrl_info = reference.sample(return_info=True)
    assert set(info) == set(torchrl_info)
    for key in set(info) - {"index"}:
        assert info[key].shape == torchrl_info[key].shape == (B * T, 1) and info[key].dtype == torch.bool
    stored = storage[info["index"][0]]
    last = torch.zeros(B, T, 1, dtype=torch.bool)
    last[:, -1] = True
    first = torch.zeros(B, T, 1, dtype=torch.bool)
    first[:, 0] = True
    assert torch.equal(info["next", "truncated"].view(B, T, 1), last)
    assert torch.equal(info["next", "done"], stored["next", "done"] | info["next", "truncated"])
    assert torch.equal(info["next", "terminated"], stored["next", "terminated"])
    assert torch.equal(info["is_init"].view(B, T, 1), stored["is_init"].view(B, T, 1) | first)
    assert torch.equal(batch["next", "truncated"], info["next", "truncated"])  # copied into the batch


def _per_slice_max(values):
    return values.view(B, T).max(-1).values.double()


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("layout", ["flat", "slices"])
def test_update_tensordict_priority_updates_prioritised_samplers_or_raises(kind, layout):
    rb = buffer(make_sampler(kind), LazyTensorStorage(N))
    rb.extend(records(N))
    batch = rb.sample()
    key = SIGNAL[kind]
    values = torch.rand(B * T) + 0.5
    if key is None:
        batch["td_error"] = values
        with pytest.raises(RuntimeError, match="is not prioritised"):
            rb.update_tensordict_priority(batch)  # TorchRL skips non-prioritised samplers silently
        return
    # differs from TorchRL: the buffer reads the sampler's signal, not "td_error"
    assert rb.priority_key == key
    batch[key] = values
    batch["td_error"] = torch.full((B * T,), 1e6)  # an ordinary entry: never read as the signal
    if layout == "slices":
        batch = batch.reshape(B, T)
    rb.update_tensordict_priority(batch)
    starts = batch["index"].reshape(B, T, -1)[:, 0, 0]
    expected = _per_slice_max(values)  # per-record values, reduced per slice with reduction="max"
    for leaf in slice_leaves(rb.sampler):
        if leaf.signal_key is None:
            continue
        # differs from TorchRL: the value is the signal, the sampler's formula makes the priority
        # (duplicated starts: the last value written wins)
        signal = {int(s): float(v) for s, v in zip(starts, expected)}
        got = leaf._signal[starts].double()
        torch.testing.assert_close(got, torch.tensor([signal[int(s)] for s in starts], dtype=torch.float64),
                                   rtol=1e-6, atol=1e-6)
        assert leaf._has_signal[starts].all()


@pytest.mark.parametrize("kind", ["curious", "mixture", "trend"])
def test_a_missing_signal_or_a_foreign_priority_key_raises_in_one_line(kind):
    rb = buffer(make_sampler(kind), LazyTensorStorage(N))
    rb.extend(records(N))
    batch = rb.sample()
    batch["td_error"] = torch.rand(B * T)
    with pytest.raises(KeyError, match=f"without '{SIGNAL[kind]}'"):
        rb.update_tensordict_priority(batch)  # TorchRL would reset those items to the default priority
    other = buffer(make_sampler(kind), LazyTensorStorage(N), priority_key="advantage")
    with pytest.raises(ValueError, match=f"reads priorities from 'advantage'.*priority_key='{SIGNAL[kind]}'"):
        other.extend(records(8))
    # an explicit priority_key on the sampler is what the buffer reads
    chosen = buffer(CuriousSampler(N, slice_len=T, priority_key="td_error"), LazyTensorStorage(N))
    chosen.extend(records(N))
    batch = chosen.sample()
    batch["td_error"] = torch.full((B * T,), 2.0)
    chosen.update_tensordict_priority(batch)
    assert (chosen.sampler._signal[batch["index"].view(B, T, -1)[:, 0, 0]] == 2.0).all()


def test_stored_td_error_is_not_read_as_the_loss_and_add_works():
    rb = buffer(CuriousSampler(N, slice_len=T), LazyTensorStorage(N))
    data = records(N)
    data["td_error"] = torch.full((N,), 3.0)
    rb.extend(data)
    assert not rb.sampler._has_signal.any() and torch.isinf(rb.sampler.priorities(torch.arange(N))).all()
    rb.add(records(1, start=N)[0])  # TorchRL's add path passes the default priority: no feedback
    assert not rb.sampler._has_signal.any()
    # a plain ReplayBuffer forwards update_priority with explicit values (the flat sample index)
    plain = ReplayBuffer(storage=LazyTensorStorage(N), sampler=CuriousSampler(N, slice_len=T), batch_size=B * T)
    plain.extend(records(N))
    _, info = plain.sample(return_info=True)
    plain.update_priority(info["index"], torch.ones(B))
    assert plain.sampler._has_signal[info["index"][0].view(B, T)[:, 0]].all()
    assert isinstance(plain.sampler, PrioritizedSampler)  # registered, so TorchRL hands updates over


def test_direct_feedback_on_every_start_is_read_per_start():
    # a 1-D index with one value each is per record only when a TorchRL buffer calls (storage=)
    sampler = CuriousSampler(N, slice_len=T)
    sampler.extend(torch.arange(N))
    losses = torch.rand(N)
    sampler.update_priority(torch.arange(N), losses)
    torch.testing.assert_close(sampler._signal, losses)
    sampler.update_priority(torch.arange(N), losses, storage=LazyTensorStorage(N))  # a buffer's call
    assert sampler._has_signal.sum() == N and torch.equal(sampler._signal[::T], losses.view(-1, T).max(-1).values)


@pytest.mark.filterwarnings("ignore:Got conflicting batch_sizes")
def test_slice_arguments_follow_torchrl():
    storage = LazyTensorStorage(N)
    rb = buffer(CuriousSampler(N, num_slices=B), storage)  # slice length = batch_size // num_slices
    rb.extend(records(N))
    assert rb.sample().shape == (B * T,) and rb.sampler.slice_len == T
    with pytest.raises(RuntimeError, match="slice_len=4 from its first batch"):
        rb.sample(B * (T + 1))  # differs from TorchRL: the length is fixed by the first batch
    for kw in ({}, {"slice_len": T, "num_slices": B}):
        with pytest.raises(ValueError, match="exactly one of num_slices / slice_len"):
            UniformSliceSampler(N, **kw)
    with pytest.raises(ValueError, match="strict_length must be True"):
        UniformSliceSampler(N, slice_len=T, strict_length=False)
    # traj_key detection: the collector's key here (a default of "traj_ids" would match nothing)
    assert rb.sampler._resolve_boundaries(storage) == ("traj", (("collector", "traj_ids"),))
    missing = buffer(UniformSliceSampler(N, slice_len=T, traj_key="episode"), LazyTensorStorage(N))
    missing.extend(records(N))
    with pytest.raises(KeyError, match="no entry 'episode'"):
        missing.sample()
    ends = buffer(UniformSliceSampler(N, slice_len=T, end_key=("next", "done")), LazyTensorStorage(N))
    ends.extend(records(N))
    assert_slices_are_contiguous(ends.sample())
    nothing = buffer(UniformSliceSampler(N, slice_len=T), LazyTensorStorage(N))
    nothing.extend(TensorDict({"t": torch.arange(N)}, [N]))
    with pytest.raises(KeyError, match="found no trajectory key"):
        nothing.sample()


def test_visit_counts_change_priorities_between_draws():
    # differs from TorchRL: Curious Replay's priorities move with every draw, without feedback
    rb = buffer(CuriousSampler(N, slice_len=T, c=100.0), LazyTensorStorage(N))
    rb.extend(records(N))
    batch = rb.sample()
    starts = batch["index"].view(B, T, -1)[:, 0, 0]
    batch["model_loss"] = torch.ones(B * T)
    rb.update_tensordict_priority(batch)
    before = rb.sampler.priorities(starts)
    rb.sampler.record_visits(starts)
    assert (rb.sampler.priorities(starts) < before).all()


# ----------------------------------------------------------------------------- intrinsic transforms
def _transform(kind):
    if kind == "adaptive":
        return AdaptiveIntrinsicReward()
    if kind == "lexa":
        return LexaStyleIntrinsicReward()
    torch.manual_seed(0)
    return DisagreementIntrinsicReward(feat_dim=8, action_dim=2, target_dim=4, hidden=16)


def _inputs(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict({
        "reward": torch.rand(n, 1, generator=g), "uncertainty": torch.rand(n, 1, generator=g) + 0.1,
        "decoded": {"image_std": torch.rand(n, 1, generator=g) + 0.1},
        "feat": torch.randn(n, 8, generator=g), "action": torch.randn(n, 2, generator=g),
    }, [n])


@pytest.mark.parametrize("kind", ["adaptive", "lexa", "disagreement"])
def test_transform_call_inside_compose_and_as_replay_transform(kind):
    a, b = _transform(kind), _transform(kind)
    b.load_state_dict(a.state_dict())
    via_call = Compose(a)._call(_inputs())  # TorchRL's per-TensorDict hook
    via_forward = Compose(b)(_inputs())
    for key in ("intrinsic_reward", "total_reward"):
        torch.testing.assert_close(via_call[key], via_forward[key])
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(20), transform=Compose(_transform(kind)),
                                batch_size=6)
    rb.extend(_inputs())
    out = rb.sample()
    assert out["total_reward"].shape == (6, 1)
    torch.testing.assert_close(out["total_reward"], out["reward"] + out["intrinsic_reward"])


@pytest.mark.parametrize("kind", ["adaptive", "lexa", "disagreement"])
def test_clones_keep_independent_running_statistics(kind):
    original = _transform(kind)
    original(_inputs(seed=1))  # some statistics to copy
    before = {k: v.clone() for k, v in original.state_dict().items()}
    clone = original.clone()
    assert clone.parent is None
    for _ in range(3):
        clone(_inputs(seed=2))
    for name, value in original.state_dict().items():
        assert torch.equal(value, before[name]), f"the clone moved the original's {name}"
    moved = [n for n, v in clone.state_dict().items() if not torch.equal(v, before[n])]
    assert moved, "the clone's statistics did not move"
    if kind == "disagreement":  # learned parameters stay shared, as TorchRL's clone shares modules
        assert clone.ensemble.weights[0] is original.ensemble.weights[0]


# ----------------------------------------------------------------------------- VTA boundary constants
class _FixedBoundary(nn.Module):
    """Boundary logits [..., 2] that pick READ where ``pattern`` is 1 and COPY elsewhere."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = torch.as_tensor(pattern, dtype=torch.float32)

    def forward(self, embed):
        logits = torch.zeros(embed.shape[0], self.pattern.numel(), 2)
        logits[..., READ_INDEX] = self.pattern * 40.0 - 20.0
        return logits


def test_boundary_constants_cannot_be_read_as_each_other():
    for module in (imwm.vta, imwm.vta.boundary):
        assert not hasattr(module, "READ") and not hasattr(module, "COPY")
    assert (READ_INDEX, COPY_INDEX) == (0, 1) and (BOUNDARY_READ, BOUNDARY_COPY) == (1.0, 0.0)
    # an index addresses the logits: a segment at max_seg_len is pushed towards READ
    pushed = regularize_boundary(torch.zeros(1, 2), torch.tensor([[9.0]]), torch.tensor([[0.0]]), 9, 99, 5.0)
    assert pushed[0, READ_INDEX] == 5.0 and pushed[0, COPY_INDEX] == 0.0
    # a value is a state's flag: boundary == BOUNDARY_READ exactly where the logits chose READ_INDEX
    vta = VTADynamics(action_dim=3, embed_dim=6, abs_belief_dim=10, obs_belief_dim=12, abs_stoch_dim=4,
                      obs_stoch_dim=5, hidden=8, boundary_hidden=8).eval()
    pattern = [1, 0, 0, 1, 0, 1]
    vta.post_boundary = _FixedBoundary(pattern)
    post, _ = vta.observe(torch.randn(2, 6, 6), torch.randn(2, 6, 3), torch.zeros(2, 6, 1, dtype=torch.bool))
    read = post["boundary_logit"].argmax(-1) == READ_INDEX
    assert torch.equal(post["boundary"][..., 0] == BOUNDARY_READ, read)
    assert torch.equal(post["boundary"][..., 0] == BOUNDARY_COPY, ~read)
    assert read[:, 1:].tolist() == [[bool(p) for p in pattern[1:]]] * 2


# ----------------------------------------------------------------------------- dormant monitor
def _mlp():
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 1))


def test_dormant_monitor_takes_any_named_groups_or_layer_lists():
    encoder, head = _mlp(), _mlp()
    x = torch.randn(32, 3)
    for model, names in (
        ({"policy": encoder, "value": head}, ["policy", "value"]),  # any group name, not only "actor"
        (nn.ModuleDict({"policy": encoder, "value": head}), ["policy", "value"]),  # a module's children
        (encoder, ["model"]),  # a Sequential is one group
        ([encoder[0], encoder[2]], ["model"]),  # a layer list: each listed layer measured at its output
    ):
        monitor = DormantMonitor(model)
        assert monitor.group_names == names
        with monitor.track():
            encoder(x), head(x)
        metrics = monitor.metrics()
        for name in names:
            assert f"dormant/{name}_all" in metrics and f"dormant/{name}_layer0" in metrics
    layers = DormantMonitor({"blocks": [encoder[0], encoder[2]]})
    with layers.track():
        encoder(x)
    assert set(layers.metrics()) == {"dormant/blocks_layer0", "dormant/blocks_layer1", "dormant/blocks_all"}


def test_dormant_monitor_unknown_group_lists_the_valid_names():
    model = nn.ModuleDict({"policy": _mlp(), "value": _mlp()})
    valid = r"unknown dormant group\(s\) \['actor'\]; valid groups: \['policy', 'value'\]"
    with pytest.raises(ValueError, match=valid):
        DormantMonitor(model, groups=["actor"])
    only = DormantMonitor(model, groups=["value"])
    with only.track():
        model["policy"](torch.randn(4, 3)), model["value"](torch.randn(4, 3))
    assert {k.split("/")[1].split("_")[0] for k in only.metrics()} == {"value"}
    with pytest.raises(ValueError, match="track"):
        only.measure(TensorDict({}, []))  # the no-grad pass is an agent's; other models use track()/step()
    with pytest.raises(TypeError, match="dormant group 'bad'"):
        DormantMonitor({"bad": 3})
