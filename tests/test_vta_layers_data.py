"""VTA layers in both flavours and the Moving Shapes known-boundary dataset."""

import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Normal

from imwm.envs.moving_shapes import MovingShapesStream, generate_moving_shapes
from imwm.vta import VTADynamics, VTAOriginal
from imwm.vta.layers import LatentDistribution, PostBoundaryDetector, PriorBoundaryDetector


def test_latent_distribution_flavours():
    orig = LatentDistribution(6, 4, hidden_dim=8, flavour="original")
    d = orig(torch.randn(5, 6))
    assert isinstance(d, Normal) and d.mean.shape == (5, 4)
    assert (d.stddev > 0).all() and (d.stddev < 1).all()
    assert isinstance(orig.hidden[1], torch.nn.ELU)
    drm = LatentDistribution(6, 4, hidden_dim=8, flavour="dreamer", min_std=0.3)
    td = drm(torch.randn(2, 5, 6) * 50)
    assert isinstance(td, TensorDict) and td.batch_size == torch.Size([2, 5])
    assert (td["std"] >= 0.3).all()
    assert isinstance(drm.hidden[1], torch.nn.LayerNorm) and isinstance(drm.hidden[2], torch.nn.SiLU)
    with pytest.raises(ValueError, match="last dim 6"):
        drm(torch.randn(5, 7))
    with pytest.raises(ValueError, match="flavour"):
        LatentDistribution(6, 4, hidden_dim=8, flavour="v3")


def test_boundary_detectors_shapes_and_structure():
    prior_o = PriorBoundaryDetector(10, flavour="original")
    assert isinstance(prior_o.net, torch.nn.Linear)
    prior_d = PriorBoundaryDetector(10, hidden_dim=12, flavour="dreamer")
    assert prior_d(torch.randn(3, 10)).shape == (3, 2)
    for flavour in ("original", "dreamer"):
        det = PostBoundaryDetector(10, hidden_dim=12, num_layers=2, flavour=flavour)
        assert det(torch.randn(3, 9, 10)).shape == (3, 9, 2)
    with pytest.raises(ValueError, match=r"\[B, T, E\]"):
        det(torch.randn(9, 10))


def test_post_boundary_receptive_field_is_local():
    torch.manual_seed(0)
    det = PostBoundaryDetector(4, hidden_dim=8, num_layers=1, flavour="dreamer")
    x = torch.randn(1, 12, 4)
    y = x.clone()
    y[:, 6] += 5.0  # changes only outputs at t=5,6,7 with one k=3 layer
    diff = (det(x) - det(y)).abs().sum(-1)[0]
    assert (diff[[5, 6, 7]] > 0).all()
    assert torch.all(diff[[0, 1, 2, 3, 4, 8, 9, 10, 11]] == 0)


def test_moving_shapes_deterministic_and_split():
    a = generate_moving_shapes(3, 20, image_size=32, seed=7)
    b = generate_moving_shapes(3, 20, image_size=32, seed=7)
    assert torch.equal(a["observation"], b["observation"]) and torch.equal(a["true_boundary"], b["true_boundary"])
    c = generate_moving_shapes(3, 20, image_size=32, seed=7, split="heldout")
    assert not torch.equal(a["observation"], c["observation"])
    # sub-ranges regenerate identically
    d = generate_moving_shapes(2, 20, image_size=32, seed=7, start_index=1)
    assert torch.equal(a["observation"][1:], d["observation"])


def test_moving_shapes_boundaries_match_segment_rules_and_frame_changes():
    td = generate_moving_shapes(20, 40, image_size=32, min_seg_len=4, max_seg_len=9, seed=1)
    tb = td["true_boundary"][..., 0]
    assert tb[:, 0].all() and td["is_first"][:, 0].all() and not td["is_first"][:, 1:].any()
    for row in tb:
        starts = row.nonzero().flatten().tolist()
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(4 <= g <= 9 for g in gaps)
    frames = td["observation"]
    assert frames.dtype == torch.uint8 and frames.shape[-3:] == (3, 32, 32)
    # the actor's colour (most frequent non-grey, non-black pixel colour) changes exactly at boundaries
    px = frames.permute(0, 1, 3, 4, 2).reshape(20, 40, -1, 3).long()
    coloured = ~((px[..., 0] == px[..., 1]) & (px[..., 1] == px[..., 2]))
    code = px[..., 0] * 65536 + px[..., 1] * 256 + px[..., 2]
    colour = torch.where(coloured, code, -1).max(-1).values  # one actor colour per frame
    changed = colour[:, 1:] != colour[:, :-1]
    assert torch.equal(changed, tb[:, 1:])


def test_moving_shapes_bad_input_and_stream():
    with pytest.raises(ValueError, match="max_seg_len"):
        generate_moving_shapes(1, 10, min_seg_len=5, max_seg_len=3)
    with pytest.raises(ValueError, match="split"):
        generate_moving_shapes(1, 10, split="test")
    with pytest.raises(ValueError, match="object_size"):
        generate_moving_shapes(1, 10, object_size=(0.3, 0.2))
    small = generate_moving_shapes(4, 6, image_size=32, seed=2)["observation"]
    big = generate_moving_shapes(4, 6, image_size=32, seed=2, object_size=(0.2, 0.28))["observation"]
    assert (big.sum(2) > 0).float().mean() > 2 * (small.sum(2) > 0).float().mean()
    s = MovingShapesStream(2, 12, image_size=32, seed=3)
    b0, b1 = s.batch(0), s.batch(1)
    assert b0.batch_size == torch.Size([2, 12]) and not torch.equal(b0["observation"], b1["observation"])
    assert torch.equal(b1["observation"], generate_moving_shapes(2, 12, image_size=32, seed=3, start_index=2)["observation"])


def test_post_boundary_pads_by_repeating_the_end_steps():
    # One k=3 layer: the logits at the last step equal those of the same sequence with its last
    # step repeated once more (and likewise at the first step): no zero "frame" past the ends.
    torch.manual_seed(0)
    det = PostBoundaryDetector(4, hidden_dim=8, num_layers=1, flavour="dreamer").eval()
    x = torch.randn(2, 7, 4)
    with torch.no_grad():
        out = det(x)
        longer = det(torch.cat([x[:, :1], x, x[:, -1:]], 1))
    assert torch.allclose(out[:, -1], longer[:, -2], atol=1e-6)
    assert torch.allclose(out[:, 0], longer[:, 1], atol=1e-6)


def test_post_boundary_detector_reads_embed_differences():
    torch.manual_seed(0)
    plain = PostBoundaryDetector(6, hidden_dim=8, num_layers=1, flavour="original").eval()
    diff = PostBoundaryDetector(6, hidden_dim=8, num_layers=1, flavour="original", diff=True).eval()
    assert diff.net[0].in_channels == 12
    diff.load_state_dict(plain.state_dict() | {"net.0.weight": torch.cat([plain.net[0].weight, torch.zeros(8, 6, 3)], 1)})
    embed = torch.randn(2, 7, 6)
    torch.testing.assert_close(diff(embed), plain(embed))  # zero weights on the differences: the plain detector
    with torch.no_grad():
        diff.net[0].weight.zero_()
        diff.net[0].weight[:, 6:, 1] = 1.0  # reads only embed_t - embed_{t-1}
    out = diff(torch.cat([torch.ones(1, 3, 6), 2 * torch.ones(1, 4, 6)], 1))  # one change, at t = 3
    changed = (out - out[:, :1]).abs().sum(-1)[0] > 1e-6
    assert changed.tolist() == [False, False, False, True, False, False, False]


@pytest.mark.parametrize("flavour,train", [("original", False), ("dreamer", False), ("dreamer", True)])
def test_post_boundary_detector_causal_sees_no_future(flavour, train):
    torch.manual_seed(0)
    det = PostBoundaryDetector(5, hidden_dim=8, num_layers=2, flavour=flavour, causal=True).train(train)
    assert det.context == 0
    x = torch.randn(3, 9, 5)
    for t in range(9):
        y = x.clone()
        y[:, t:] += torch.randn_like(y[:, t:])  # change step t and everything after it
        with torch.no_grad():
            same, moved = det(x), det(y)
        torch.testing.assert_close(same[:, :t], moved[:, :t])
        assert not torch.allclose(same[:, t], moved[:, t])  # step t itself is seen
    # the receptive field reaches 2 * num_layers steps back: step 4 moves when step 0 does, step 5 does not
    y = x.clone()
    y[:, 0] += 1.0
    with torch.no_grad():
        delta = (det(y) - det(x)).abs().sum(-1)[0]
    assert delta[4] > 0 and delta[5] == 0
    with_diff = PostBoundaryDetector(5, hidden_dim=8, num_layers=2, flavour=flavour, diff=True, causal=True).train(train)
    with torch.no_grad():
        delta = (with_diff(y) - with_diff(x)).abs().sum(-1)[0]
    assert delta[5] > 0 and delta[6] == 0  # the difference reaches one step further back


def test_vta_models_accept_a_causal_detector():
    m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8, boundary_causal=True)
    assert m.post_boundary.causal
    assert m(torch.randint(0, 255, (2, 5, 3, 16, 16), dtype=torch.uint8))["read_prob"].shape == (2, 5, 1)
    d = VTADynamics(action_dim=2, embed_dim=8, abs_belief_dim=8, obs_belief_dim=8, abs_stoch_dim=2, obs_stoch_dim=2,
                    hidden=8, boundary_hidden=8, boundary_causal=True)
    assert d.post_boundary.causal


def test_post_boundary_detector_norm_option():
    """Each flavour has its normalisation by default; ``norm=`` swaps it and keeps the activation."""
    types = lambda det: [type(m).__name__ for m in det.net]  # noqa: E731
    assert "BatchNorm1d" in types(PostBoundaryDetector(5, hidden_dim=8, flavour="original"))
    assert "ChannelLayerNorm" in types(PostBoundaryDetector(5, hidden_dim=8, flavour="dreamer"))
    swapped = types(PostBoundaryDetector(5, hidden_dim=8, flavour="dreamer", norm="batch"))
    assert "BatchNorm1d" in swapped and "SiLU" in swapped and "ChannelLayerNorm" not in swapped
    with pytest.raises(ValueError, match="boundary_norm must be one of"):
        PostBoundaryDetector(5, hidden_dim=8, norm="group")
    d = VTADynamics(action_dim=2, embed_dim=8, abs_belief_dim=8, obs_belief_dim=8, abs_stoch_dim=2, obs_stoch_dim=2,
                    hidden=8, boundary_hidden=8, boundary_causal=True, boundary_norm="batch")
    assert "BatchNorm1d" in types(d.post_boundary)
    post, _ = d.eval().observe(torch.randn(2, 6, 8), torch.zeros(2, 6, 2), torch.zeros(2, 6, 1, dtype=torch.bool))
    assert post["boundary_logit"].shape == (2, 6, 2)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_post_boundary_detector_output_under_a_large_channel_offset(norm):
    """What a large per-channel offset in the last block does to the output's dependence on the input.

    Trained layer-norm detectors grew such offsets (the second block's channels at ~5.5 against a
    spread of ~0.7 over steps) and their output became nearly constant; batch norm removes the
    offset per channel, so the output keeps its spread.
    """
    torch.manual_seed(0)
    det = PostBoundaryDetector(16, hidden_dim=32, num_layers=2, norm=norm, causal=True)
    x = torch.randn(8, 20, 16)
    def spread() -> float:
        logits = det(x)
        return (logits[..., 0] - logits[..., 1]).std().item()

    with torch.no_grad():
        before = spread()
        det.net[5].bias += 20.0 * torch.randn(32)  # the second block's conv, before its norm
        after = spread()
    if norm == "layer":
        assert after < 0.2 * before
    else:
        assert after == pytest.approx(before, rel=1e-3)
