"""VTAOriginal: outputs, boundary-weighted KL, bidirectional posterior, learning, generation, bad input."""

import pytest
import torch

from imwm.envs.moving_shapes import generate_moving_shapes
from imwm.vta import VTAOriginal

TINY = dict(image_size=32, cnn_depth=4, embed_dim=16, belief_dim=16, state_dim=4, hidden_dim=16, boundary_layers=1)


def test_forward_keys_shapes_and_weighting():
    m = VTAOriginal(**TINY)
    obs = generate_moving_shapes(3, 10, image_size=32)["observation"]
    out = m(obs)
    assert out["loss"].shape == ()
    for k in ("obs_cost", "kl_abs", "kl_abs_raw", "kl_obs", "kl_mask", "boundary_kl"):
        assert out[k].shape == (3, 10), k
    for k in ("boundary", "read_prob", "prior_read_prob", "seg_len", "seg_num"):
        assert out[k].shape == (3, 10, 1), k
    assert out["recon"].shape == (3, 10, 3, 32, 32) and out["recon"].abs().max() <= 1.0  # Tanh output
    read = (out["boundary"][..., 0].detach() > 0.5).float()
    assert (read[:, 0] == 1).all()
    assert (out["kl_abs"][read == 0] == 0).all()  # abstract KL only where READ
    torch.testing.assert_close(out["kl_abs"], out["kl_abs_raw"] * out["boundary"][..., 0])
    # seg stats follow the READ flags
    seg_len, seg_num = out["seg_len"][..., 0], out["seg_num"][..., 0]
    torch.testing.assert_close(seg_num, read.cumsum(1))
    for t in range(1, 10):
        expect = torch.where(read[:, t] == 1, torch.ones(3), seg_len[:, t - 1] + 1)
        torch.testing.assert_close(seg_len[:, t], expect)
    total = out["obs_cost"] + out["kl_abs"] + out["kl_obs"] + out["kl_mask"]
    torch.testing.assert_close(out["loss"], total.mean())
    out["loss"].backward()
    assert m.post_boundary.net[0].weight.grad.abs().sum() > 0
    assert m.abs_post_bwd.weight_ih.grad.abs().sum() > 0


def test_eval_mode_boundaries_are_deterministic():
    m = VTAOriginal(**TINY).eval()
    obs = generate_moving_shapes(2, 8, image_size=32)["observation"]
    a, b = m(obs)["boundary"], m(obs)["boundary"]
    assert torch.equal(a, b)
    probs = m(obs)["read_prob"][:, 1:]
    assert torch.equal(a[:, 1:].detach(), (probs >= 0.5).float())


def test_abstract_posterior_sees_the_future_of_its_segment():
    torch.manual_seed(0)
    m = VTAOriginal(**TINY).eval()
    obs = generate_moving_shapes(1, 8, image_size=32)["observation"].float() / 127.5 - 1
    frames = m._frames(obs)
    post_a = m._posterior(frames)
    changed = frames.clone()
    changed[:, 6] = -changed[:, 6]
    post_b = m._posterior(changed)
    read = post_a["boundary"][0, :, 0]
    # the backward RNN carries frame 6 back to the READ that starts its segment (when the boundary
    # samples agree); the observation forward RNN never looks ahead
    if torch.equal(read, post_b["boundary"][0, :, 0]):
        start = int(torch.nonzero(read[:7]).max())
        assert not torch.allclose(post_a["post_abs_mean"][:, start], post_b["post_abs_mean"][:, start])
    assert torch.allclose(post_a["post_abs_mean"][:, 0], post_b["post_abs_mean"][:, 0]) or read[1:7].sum() == 0


def test_loss_decreases_on_moving_shapes():
    torch.manual_seed(0)
    m = VTAOriginal(**TINY, obs_std=0.3, boundary_force_scale=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    obs = generate_moving_shapes(3, 8, image_size=32, seed=3)["observation"]
    losses = []
    for _ in range(24):
        out = m(obs)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, (first, last)


def test_generation_shapes():
    m = VTAOriginal(**TINY)
    obs = generate_moving_shapes(2, 6, image_size=32)["observation"]
    jumpy = m.jumpy_generation(obs, 4)
    assert jumpy.batch_size == (2, 4) and jumpy["frames"].shape == (2, 4, 3, 32, 32)
    full = m.full_generation(obs, 5)
    assert full["frames"].shape == (2, 5, 3, 32, 32) and full["boundary"].shape == (2, 5, 1)
    assert full["frames"].abs().max() <= 1.0


def test_bad_input():
    m = VTAOriginal(**TINY)
    with pytest.raises(ValueError, match=r"obs must be \[B, T, 3, 32, 32\]"):
        m(torch.zeros(2, 5, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="obs must be"):
        m(torch.zeros(5, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="max_seg_len"):
        VTAOriginal(**TINY, max_seg_len=0)
    with pytest.raises(ValueError, match="boundary_temp"):
        VTAOriginal(**TINY, boundary_temp=-1.0)
    with pytest.raises(ValueError, match="force_scale"):
        VTAOriginal(**TINY, boundary_force_scale=-1.0)
    with pytest.raises(ValueError, match="image_size"):
        VTAOriginal(**{**TINY, "image_size": 40})


def test_forced_boundaries_replace_the_posterior():
    torch.manual_seed(0)
    m = VTAOriginal(image_size=32, cnn_depth=4, embed_dim=16, belief_dim=16, state_dim=4, hidden_dim=16)
    obs = generate_moving_shapes(2, 8, image_size=32)["observation"]
    flags = torch.zeros(2, 8, 1)
    flags[:, 3] = 1.0
    out = m(obs, boundary=flags)
    want = flags.clone()
    want[:, 0] = 1.0  # frame 0 always starts a segment
    assert torch.equal(out["boundary"], want)
    assert (out["kl_abs"][:, [1, 2, 4, 5, 6, 7]] == 0).all() and (out["kl_abs"][:, 3] > 0).all()
    with pytest.raises(ValueError, match=r"\[B, T, 1\]"):
        m(obs, boundary=torch.zeros(2, 8))


@pytest.mark.parametrize("feedback", [True, False])
def test_obs_feedback_decides_whether_the_observation_belief_sees_past_states(feedback):
    """Without feedback, ``h^s`` inside a segment depends on ``f^z`` alone, not on ``s_{t-1}``."""
    torch.manual_seed(0)
    m = VTAOriginal(**TINY, obs_feedback=feedback).eval()
    frames = m._frames(generate_moving_shapes(2, 6, image_size=32)["observation"])
    flags = torch.zeros(2, 6, 1)
    flags[:, 0] = 1.0  # one segment: every later step is a COPY
    torch.manual_seed(1)
    a = m._posterior(frames, flags)
    original = m.post_obs_state.mean_std
    m.post_obs_state.mean_std = lambda feat: tuple(x * 2.0 for x in original(feat))  # other s_t, same z
    torch.manual_seed(1)
    b = m._posterior(frames, flags)
    torch.testing.assert_close(a["abs_feat"], b["abs_feat"])
    assert not torch.allclose(a["obs_state"], b["obs_state"])
    same_belief = torch.allclose(a["obs_belief"], b["obs_belief"])
    assert same_belief != feedback
    assert m.update_obs_belief.input_size == (TINY["state_dim"] if feedback else 0) + TINY["hidden_dim"]
