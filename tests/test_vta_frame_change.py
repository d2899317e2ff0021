"""The boundary detector's frame-change view: the encoder, its wiring into VTADynamics and the
sequence model, the optimiser group, and the agent's refusal of it."""

import pytest
import torch

from imwm.errors import ConfigError
from imwm.training.build_model import build_dynamics
from imwm.training.vta_run import _optimizer
from imwm.vta import VTADynamics, VTAOriginal, VTASequenceModel
from imwm.vta.frame_change import FrameChangeEncoder

SIZES = dict(abs_belief_dim=8, obs_belief_dim=8, abs_stoch_dim=2, obs_stoch_dim=2, hidden=8, boundary_hidden=8)


def test_encoder_sees_only_the_change():
    torch.manual_seed(0)
    enc = FrameChangeEncoder(channels=3, features=5, depth=4)
    still = torch.rand(1, 1, 3, 16, 16).expand(2, 6, 3, 16, 16).clone()
    base = enc(still)
    assert base.shape == (2, 6, 5)
    # a static video, whatever its content, gives the features of "no change" at every step
    assert torch.allclose(base, enc(torch.zeros(2, 6, 3, 16, 16)), atol=1e-6)
    moved = still.clone()
    moved[:, 4:] = moved[:, 4:].roll(3, dims=-1)  # a cut at t = 4: frames 4, 5 differ from 3
    differs = ((enc(moved) - base).abs().sum(-1) > 1e-6)[0].tolist()
    assert differs == [False, False, False, False, True, False]
    with pytest.raises(ValueError, match=r"frames must be \[B, T, 3, H, W\]"):
        enc(torch.zeros(2, 6, 1, 16, 16))
    with pytest.raises(ValueError, match="features must be an integer >= 1, got 0"):
        FrameChangeEncoder(channels=3, features=0)


def test_dynamics_requires_the_view_exactly_when_configured():
    embed, action, first = torch.randn(2, 5, 6), torch.zeros(2, 5, 1), torch.zeros(2, 5, 1, dtype=torch.bool)
    plain = VTADynamics(action_dim=1, embed_dim=6, **SIZES)
    assert plain.post_boundary.in_dim == 6
    with pytest.raises(ValueError, match="boundary_pixel_view is 0"):
        plain.observe(embed, action, first, pixel_view=torch.zeros(2, 5, 3))
    viewing = VTADynamics(action_dim=1, embed_dim=6, boundary_pixel_view=3, **SIZES)
    assert viewing.post_boundary.in_dim == 9
    with pytest.raises(ValueError, match=r"needs pixel_view \[B, T, 3\]"):
        viewing.observe(embed, action, first)
    with pytest.raises(ValueError, match="pixel_view"):
        viewing.observe(embed, action, first, pixel_view=torch.zeros(2, 5, 4))
    torch.manual_seed(0)
    a, _ = viewing.eval().observe(embed, action, first, pixel_view=torch.zeros(2, 5, 3))
    torch.manual_seed(0)
    b, _ = viewing.observe(embed, action, first, pixel_view=torch.ones(2, 5, 3))
    assert not torch.allclose(a["boundary_logit"][:, 1:], b["boundary_logit"][:, 1:])  # the detector reads it
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="boundary_pixel_view must be an integer >= 0"):
            VTADynamics(action_dim=1, embed_dim=6, boundary_pixel_view=bad, **SIZES)


@pytest.mark.parametrize("grad", ["straight_through", "local"])
def test_sequence_model_trains_the_view(grad):
    torch.manual_seed(0)
    model = VTASequenceModel(image_size=16, cnn_depth=2, embed_dim=8, boundary_pixel_view=4, boundary_grad=grad,
                             boundary_force_scale=0.0, **SIZES)
    assert isinstance(model.frame_change, FrameChangeEncoder) and model.frame_change.features == 4
    model(torch.randint(0, 256, (3, 6, 3, 16, 16), dtype=torch.uint8))["loss"].backward()
    grads = [p.grad for p in model.frame_change.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert VTASequenceModel(image_size=16, cnn_depth=2, embed_dim=8, **SIZES).frame_change is None


@pytest.mark.parametrize("grad", ["straight_through", "local"])
def test_original_variant_trains_the_view(grad):
    torch.manual_seed(0)
    model = VTAOriginal(image_size=16, cnn_depth=2, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8,
                        boundary_pixel_view=4, boundary_grad=grad, boundary_force_scale=0.0)
    assert model.post_boundary.in_dim == 12 and model.frame_change.features == 4
    model(torch.randint(0, 256, (3, 6, 3, 16, 16), dtype=torch.uint8))["loss"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.frame_change.parameters()) > 0
    assert VTAOriginal(image_size=16, cnn_depth=2, embed_dim=8, belief_dim=8, state_dim=2,
                       hidden_dim=8).frame_change is None
    with pytest.raises(ValueError, match="boundary_pixel_view must be an integer >= 0"):
        VTAOriginal(image_size=16, boundary_pixel_view=-2)


def test_the_view_learns_at_the_detector_rate():
    model = VTASequenceModel(image_size=16, cnn_depth=2, embed_dim=8, boundary_pixel_view=4, **SIZES)
    opt = _optimizer(model, lr=1e-3, eps=1e-8, boundary_lr_scale=3.0)
    fast = {id(p) for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[1]["lr"] == pytest.approx(3e-3)
    assert {id(p) for p in model.frame_change.parameters()} <= fast
    assert {id(p) for p in model.dynamics.post_boundary.parameters()} <= fast
    assert not {id(p) for p in model.encoder.parameters()} & fast


def test_agent_refuses_the_view_with_the_full_key():
    cfg = {"name": "vta", **SIZES, "boundary_pixel_view": 4}
    with pytest.raises(ConfigError, match="dynamics.boundary_pixel_view"):
        build_dynamics(cfg, action_dim=3, embed_dim=6)
    assert build_dynamics({**cfg, "boundary_pixel_view": 0}, action_dim=3, embed_dim=6).boundary_pixel_view == 0
