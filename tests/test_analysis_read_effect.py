"""The local READ effect is the exact cost difference of two runs that share their random numbers."""

import numpy as np
import pytest
import torch

from imwm.analysis.read_effect import local_read_effect
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
