"""The local READ effect is the exact cost difference of two runs that share their random numbers."""

import numpy as np
import pytest
import torch

from imwm.analysis.read_effect import held_boundary_costs, local_read_effect
from imwm.vta import VTAOriginal


def _model():
    torch.manual_seed(0)
    return VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8).eval()


def _cost(model, obs, flags, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model(obs, boundary=flags)
    return (out["obs_cost"] + out["kl_abs"] + out["kl_obs"]).sum(1)


def test_effect_is_the_cost_difference_of_read_and_copy_at_that_step():
    model = _model()
    obs = torch.randint(0, 255, (3, 6, 3, 16, 16), dtype=torch.uint8)
    held = torch.zeros(3, 6, 1)
    held[:, 3] = 1.0
    effect = local_read_effect(model, obs, held, seed=7)
    assert effect.shape == (3, 5)
    read, copy = held.clone(), held.clone()
    read[:, 0] = copy[:, 0] = 1.0
    read[:, 2], copy[:, 2] = 1.0, 0.0
    by_hand = (_cost(model, obs, read, 7) - _cost(model, obs, copy, 7)).double().numpy()
    np.testing.assert_allclose(effect[:, 1], by_hand, rtol=1e-6, atol=1e-3)
    # the shared random numbers make it reproducible and noise-free: the same call gives the same effect
    np.testing.assert_array_equal(effect, local_read_effect(model, obs, held, seed=7))
    # and the caller's random stream is left where it was
    torch.manual_seed(1)
    local_read_effect(model, obs, held)
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(1))


def test_bad_input_is_one_clear_error():
    model = _model()
    obs = torch.randint(0, 255, (2, 4, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"boundary must be \[B, T, 1\]"):
        local_read_effect(model, obs, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="eval\\(\\) mode"):
        local_read_effect(model.train(), obs, torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="cost must be one of"):
        local_read_effect(model.eval(), obs, torch.zeros(2, 4, 1), cost="nats")
    with pytest.raises(ValueError, match="mode must be one of"):
        local_read_effect(model, obs, torch.zeros(2, 4, 1), mode="training")
    with pytest.raises(ValueError, match=r"no \['model_cost'\]"):
        local_read_effect(model, obs, torch.zeros(2, 4, 1), cost="model")


def test_training_mode_uses_batch_statistics_and_puts_the_running_ones_back():
    model = _model()  # the original variant: batch norm in the encoder and the detector
    obs = torch.randint(0, 255, (3, 5, 3, 16, 16), dtype=torch.uint8)
    held = torch.zeros(3, 5, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    effect = local_read_effect(model, obs, held, seed=2, mode="train")
    assert not model.training  # handed back in the mode it came in
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    read, copy = held.clone(), held.clone()
    read[:, 0] = copy[:, 0] = 1.0
    read[:, 1] = 1.0
    model.train()
    by_hand = (_cost(model, obs, read, 2) - _cost(model, obs, copy, 2)).double().numpy()
    np.testing.assert_allclose(effect[:, 0], by_hand, rtol=1e-6, atol=1e-3)
    # batch statistics, not the running ones: the eval-mode effect differs
    assert not np.allclose(effect, local_read_effect(model.eval(), obs, held, seed=2))


class _MissCounter(torch.nn.Module):
    """A stand-in VTA whose cost is 10 nats per step where the forced flag misses the truth."""

    def __init__(self, truth):
        super().__init__()
        self.truth = truth

    def forward(self, obs, boundary):
        miss = (boundary[..., 0] != self.truth[..., 0]).float()
        return {"obs_cost": 10.0 * miss, "kl_abs": boundary[..., 0], "kl_obs": torch.zeros_like(miss)}


def test_held_boundary_costs_on_hand_computed_sets():
    truth = torch.zeros(2, 8, 1)
    truth[:, 0] = 1.0
    truth[0, [3, 6]] = 1.0
    truth[1, 4] = 1.0
    costs = held_boundary_costs(_MissCounter(truth).eval(), torch.zeros(2, 8, 3, 4, 4), truth, seed=1)
    # true: no miss, kl_abs counts step 0 and the 1.5 true READs per sequence
    assert costs["true"] == {"reads": 1.5, "obs_cost": 0.0, "kl_abs": 2.5, "kl_obs": 0.0, "cost": 2.5}
    assert costs["all COPY"]["obs_cost"] == 15.0 and costs["all COPY"]["reads"] == 0.0
    assert costs["all READ"]["reads"] == 7.0 and costs["all READ"]["obs_cost"] == 10.0 * (7 - 1.5)
    assert costs["true +1"]["obs_cost"] == 30.0  # each late READ misses twice
    assert costs["random"]["reads"] == 1.5  # the true count, placed elsewhere (or by chance on it)
    assert 0.0 <= costs["random"]["obs_cost"] <= 30.0


def test_held_boundary_costs_needs_eval_mode():
    with pytest.raises(ValueError, match="eval"):
        held_boundary_costs(_model().train(), torch.zeros(1, 4, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, 4, 1))
