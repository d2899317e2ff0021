import numpy as np
import pytest
import torch

from imwm.analysis.read_effect import local_read_effect
from imwm.envs.moving_shapes import generate_moving_shapes
from imwm.vta import VTASequenceModel

TINY = dict(
    image_size=32, cnn_depth=4, embed_dim=16, free_bits=0.1, obs_std=0.1, abs_belief_dim=16, obs_belief_dim=16,
    abs_stoch_dim=4, obs_stoch_dim=4, hidden=16, boundary_hidden=8, boundary_rate=0.15, boundary_scale=30.0,
)


def _obs(batch: int = 2, steps: int = 8) -> torch.Tensor:
    return generate_moving_shapes(batch, steps, image_size=32)["observation"]


def test_forced_boundaries_replace_the_posterior():
    torch.manual_seed(0)
    m = VTASequenceModel(**TINY)
    flags = torch.zeros(2, 8, 1)
    flags[:, 3] = 1.0
    out = m(_obs(), boundary=flags)
    want = flags.clone()
    want[:, 0] = 1.0  # frame 0 always starts a segment
    assert torch.equal(out["boundary"], want)
    # the abstract KL is paid where a segment starts, nowhere else
    assert (out["kl_abs"][:, [1, 2, 4, 5, 6, 7]] == 0).all() and (out["kl_abs"][:, 3] > 0).all()
    with pytest.raises(ValueError, match=r"\[B, T, 1\]"):
        m(_obs(), boundary=torch.zeros(2, 8))


def test_forcing_changes_the_states_after_a_read_only():
    torch.manual_seed(0)
    m = VTASequenceModel(**TINY).eval()
    obs = _obs()
    flags = torch.zeros(2, 8, 1)
    costs = []
    for at in (None, 5):
        f = flags.clone()
        if at is not None:
            f[:, at] = 1.0
        torch.manual_seed(1)
        costs.append(m(obs, boundary=f)["obs_cost"])
    assert torch.equal(costs[0][:, :5], costs[1][:, :5])  # steps before the READ are untouched
    assert not torch.equal(costs[0][:, 5:], costs[1][:, 5:])


def test_local_read_effect_reads_the_dreamer_variant():
    torch.manual_seed(0)
    m = VTASequenceModel(**TINY).eval()
    effect = local_read_effect(m, _obs(), torch.zeros(2, 8, 1), seed=3)
    assert effect.shape == (2, 7) and np.isfinite(effect).all()
    assert np.abs(effect).max() > 0  # a READ changes the cost somewhere


def test_local_read_effect_on_the_training_objective_matches_model_cost_by_hand():
    torch.manual_seed(0)
    m = VTASequenceModel(**TINY).eval()
    obs = _obs()
    effect = local_read_effect(m, obs, torch.zeros(2, 8, 1), seed=3, cost="model")
    read, copy = torch.zeros(2, 8, 1), torch.zeros(2, 8, 1)
    read[:, 0] = copy[:, 0] = 1.0
    read[:, 4] = 1.0
    with torch.no_grad():
        by_hand = []
        for flags in (read, copy):
            torch.manual_seed(3)
            by_hand.append(m(obs, boundary=flags)["model_cost"].sum(1))
    np.testing.assert_allclose(effect[:, 3], (by_hand[0] - by_hand[1]).double().numpy(), rtol=1e-6, atol=1e-3)
    # the training objective weights and clips the KLs, so it is not the ELBO's difference
    assert not np.allclose(effect, local_read_effect(m, obs, torch.zeros(2, 8, 1), seed=3))
