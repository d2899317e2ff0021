import numpy as np
import pytest
import torch
from torch import nn

from imwm.analysis.rollout import boundary_trace, play_episode, rollout_vta_sequences, trace_slice
from imwm.envs import make_env
from imwm.envs.moving_shapes import generate_moving_shapes
from imwm.vta.dynamics import VTADynamics
from imwm.vta.original import VTAOriginal


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 64 * 64, 8)

    def forward(self, obs):  # uint8 frames in, as the agent's encoder takes them
        return self.linear(obs.float().flatten(1) / 255 - 0.5)


class _TinyWorldModel(nn.Module):
    """Encoder + real VTADynamics: what boundary_trace reads from the agent's world model."""

    def __init__(self, action_dim, max_seg_len=4, force=10.0):
        super().__init__()
        self.encoder = _Encoder()
        self.dynamics = VTADynamics(action_dim=action_dim, embed_dim=8, abs_belief_dim=8, obs_belief_dim=8,
                                    abs_stoch_dim=2, obs_stoch_dim=2, hidden=8, boundary_hidden=4,
                                    max_seg_len=max_seg_len, max_seg_num=100, boundary_force_scale=force)


def test_play_episode_records_replay_layout_on_real_ale():
    env = make_env(name="atari", task="breakout", num_envs=1, seed=3)
    ep = play_episode(env, max_steps=25)
    env.close()
    T = ep["observation"].shape[0]
    assert ep["observation"].dtype == np.uint8 and ep["observation"].shape[1:] == (3, 64, 64)
    assert 2 <= T <= 26 and ep["action"].shape == (T, env.action_spec.shape[-1])
    assert not ep["action"][0].any() and np.allclose(ep["action"][1:].sum(-1), 1.0)  # one-hot after t=0
    assert ep["is_last"][-1] and not ep["is_last"][:-1].any()
    assert ep["lives"][0] == 5 and ep["reward"][0] == 0.0
    with pytest.raises(ValueError, match="max_steps must be"):
        play_episode(env, max_steps=0)


def test_boundary_trace_with_real_vta_dynamics_and_forcing():
    rng = np.random.default_rng(0)
    T, A = 23, 4
    episode = {
        "observation": rng.integers(0, 255, size=(T, 3, 64, 64), dtype=np.uint8),
        "action": np.eye(A, dtype=np.float32)[rng.integers(0, A, T)],
        "reward": np.zeros(T), "lives": np.full(T, 3.0), "is_last": np.eye(T, dtype=bool)[-1],
    }
    episode["action"][0] = 0
    wm = _TinyWorldModel(A, max_seg_len=4, force=1e4).eval()
    tr = boundary_trace(wm, episode)
    for key in ("boundary", "read_prob", "detector_read_prob", "seg_len", "seg_num", "kl_abs", "kl_obs",
                "frame_delta", "reward", "lives"):
        assert tr[key].shape == (T,), key
    assert tr["boundary"][0]  # a reset starts a segment
    # with overwhelming forcing, no segment is longer than max_seg_len
    assert tr["seg_len"].max() <= 4 and (tr["seg_len"] >= 1).all()
    assert np.all((tr["read_prob"] >= 0) & (tr["read_prob"] <= 1))
    body = trace_slice(tr, 1)
    assert body["boundary"].shape == (T - 1,) and body["frames"].shape[0] == T - 1


def test_boundary_trace_refuses_a_model_without_boundaries():
    wm = nn.Module()
    wm.encoder = nn.Identity()
    wm.dynamics = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="needs a run trained with dynamics=vta"):
        boundary_trace(wm, {"observation": np.zeros((3, 2))})


def test_rollout_vta_sequences_keys_and_truth():
    data = generate_moving_shapes(3, 10, image_size=32, seed=0, split="heldout")
    model = VTAOriginal(image_size=32, cnn_depth=4, embed_dim=16, belief_dim=16, state_dim=4, hidden_dim=16)
    model.train()
    traces = rollout_vta_sequences(model, data["observation"], true_boundary=data["true_boundary"], batch_size=2)
    assert len(traces) == 3 and model.training  # mode restored
    tr = traces[2]
    assert tr["boundary"].dtype == bool and tr["boundary"][0]
    assert tr["true_boundary"].tolist() == data["true_boundary"][2, :, 0].tolist()
    assert np.isnan(tr["frame_delta"][0]) and np.isfinite(tr["frame_delta"][1:]).all()
    with pytest.raises(ValueError, match="true_boundary must be"):
        rollout_vta_sequences(model, data["observation"], true_boundary=data["true_boundary"][:2])


def test_heldout_sequences_match_the_trainers_heldout_split():
    """Every dataset option of the run reaches the generator (object_size included), so the
    analysis sees the same held-out data as the trainer's own evaluation."""
    from imwm.analysis.rollout import heldout_moving_shapes
    from imwm.training.vta_run import heldout_data

    data_cfg = {"image_size": 16, "seq_len": 9, "min_seg_len": 2, "max_seg_len": 5, "object_size": [0.2, 0.3],
                "batch_size": 4, "heldout_sequences": 3, "seed": 4}
    ours = heldout_moving_shapes(data_cfg, 3)
    theirs = heldout_data({"data": data_cfg})
    assert torch.equal(ours["observation"], theirs["observation"])
    assert torch.equal(ours["true_boundary"], theirs["true_boundary"])
    longer = heldout_moving_shapes(data_cfg, 2, seq_len=20)
    assert longer["observation"].shape[:2] == (2, 20)
