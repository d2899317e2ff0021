"""local_boundary_loss: the exact READ-minus-COPY cost difference at one flipped step per sequence."""

import pytest
import torch
from tensordict import TensorDict

from imwm.envs.moving_shapes import generate_moving_shapes
from imwm.vta import VTAOriginal, local_boundary_loss


class _Stand_in(torch.nn.Module):
    """Cost of a READ at step t is w[t] (plus noise shared by both forced passes)."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, obs, boundary):
        B, T = boundary.shape[:2]
        noise = torch.randn(B, T)  # common random numbers: must cancel in the difference
        zeros = torch.zeros(B, T)
        return TensorDict({"obs_cost": boundary[..., 0] * self.w + noise, "kl_abs": zeros, "kl_obs": zeros}, [])


def test_gradient_is_the_cost_difference_at_the_flipped_step():
    torch.manual_seed(0)
    B, T = 4, 6
    w = torch.tensor([0.0, 3.0, -2.0, 5.0, 1.0, -4.0])
    flags = (torch.rand(B, T, 1) < 0.5).float()
    read_prob = torch.full((B, T, 1), 0.3, requires_grad=True)
    gen = torch.Generator().manual_seed(1)
    loss = local_boundary_loss(_Stand_in(w), None, {"boundary": flags, "read_prob": read_prob}, generator=gen)
    loss.backward()
    steps = torch.randint(1, T, (B,), generator=torch.Generator().manual_seed(1))
    want = torch.zeros(B, T)
    want[torch.arange(B), steps] = w[steps] * (T - 1) / (B * T)
    torch.testing.assert_close(read_prob.grad[..., 0], want)


def test_original_model_carries_the_local_gradient_in_its_loss(monkeypatch):
    import imwm.vta.original as original

    calls = []

    def spy(*args, **kwargs):
        calls.append(local_boundary_loss(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(original, "local_boundary_loss", spy)
    torch.manual_seed(0)
    m = VTAOriginal(image_size=32, cnn_depth=4, embed_dim=16, belief_dim=16, state_dim=4, hidden_dim=16,
                    boundary_grad="local", boundary_scale=0.0)
    obs = generate_moving_shapes(3, 8, image_size=32)["observation"]
    out = m(obs)
    assert not out["boundary"].requires_grad  # no straight-through path
    objective = sum(out[k] for k in ("obs_cost", "kl_abs", "kl_obs", "kl_mask", "boundary_kl")).mean()
    torch.testing.assert_close(out["loss"], objective)  # the value is the objective's alone
    detector = m.post_boundary.net[0].weight
    (from_loss,) = torch.autograd.grad(out["loss"], detector, retain_graph=True)
    (from_objective,) = torch.autograd.grad(objective, detector, retain_graph=True)
    (from_local,) = torch.autograd.grad(calls[0], detector)
    assert from_local.abs().sum() > 0
    torch.testing.assert_close(from_loss, from_objective + from_local)  # ... its gradient adds the local term
    m(obs, boundary=out["boundary"].detach())  # forced flags (diagnostics): no extra passes
    m.eval()
    m(obs)  # evaluation: none either
    assert len(calls) == 1
    with pytest.raises(ValueError, match="boundary_grad"):
        VTAOriginal(image_size=32, boundary_grad="reinforce")
