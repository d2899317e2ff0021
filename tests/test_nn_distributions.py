"""Categorical helpers: unimix, straight-through sampling, KL and entropy."""

import math

import pytest
import torch

from imwm.nn import (
    categorical_entropy,
    categorical_kl,
    straight_through_sample,
    uniform_log_probs,
    unimix_logits,
)


def test_unimix_floor_and_normalisation():
    logits = torch.tensor([[50.0, 0.0, -50.0, 0.0]]).repeat(3, 1)
    mixed = unimix_logits(logits, 0.01).exp()
    assert torch.allclose(mixed.sum(-1), torch.ones(3))
    assert mixed.min() >= 0.01 / 4 - 1e-7
    raw = torch.softmax(logits, -1)
    assert torch.allclose(mixed, 0.99 * raw + 0.0025)


def test_unimix_zero_is_log_softmax_and_bad_value_raises():
    logits = torch.randn(5, 7)
    assert torch.allclose(unimix_logits(logits, 0.0), torch.log_softmax(logits, -1))
    with pytest.raises(ValueError, match="unimix"):
        unimix_logits(logits, 1.0)


def test_sample_with_given_uniform_is_inverse_cdf():
    log_p = torch.tensor([0.1, 0.2, 0.7]).log().expand(4, 3)
    sample = straight_through_sample(log_p, torch.tensor([0.05, 0.25, 0.95, 0.31]))
    assert torch.equal(sample.argmax(-1), torch.tensor([0, 1, 2, 2]))
    assert torch.equal(sample.sum(-1), torch.ones(4))


def test_sample_frequencies_match_probabilities():
    torch.manual_seed(1)
    probs = torch.tensor([0.05, 0.15, 0.3, 0.5])
    sample = straight_through_sample(probs.log().expand(40000, 4))
    assert torch.allclose(sample.detach().mean(0), probs, atol=0.01)


def test_straight_through_gradient_is_gradient_of_probs():
    logits = torch.randn(2, 5, requires_grad=True)
    weights = torch.randn(2, 5)
    (straight_through_sample(torch.log_softmax(logits, -1)) * weights).sum().backward()
    logits2 = logits.detach().clone().requires_grad_(True)
    (torch.softmax(logits2, -1) * weights).sum().backward()
    assert torch.allclose(logits.grad, logits2.grad, atol=1e-6)


def test_kl_and_entropy_hand_values():
    log_p = torch.tensor([0.5, 0.5]).log()
    log_q = torch.tensor([0.25, 0.75]).log()
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert categorical_kl(log_p, log_q).item() == pytest.approx(expected, abs=1e-6)
    assert categorical_kl(log_p, log_p).item() == pytest.approx(0.0, abs=1e-7)
    uniform = uniform_log_probs((3, 8))
    assert torch.allclose(categorical_entropy(uniform), torch.full((3,), math.log(8)))
    with pytest.raises(ValueError, match="same shape"):
        categorical_kl(log_p, torch.zeros(3))


def test_gaussian_nll_hand_values():
    import math

    from imwm.nn.distributions import gaussian_nll

    err, std = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 2.0])
    expected = torch.tensor([0.5 * math.log(2 * math.pi), 0.5 * 4 + math.log(0.5) + 0.5 * math.log(2 * math.pi),
                             0.5 * 1 + math.log(2.0) + 0.5 * math.log(2 * math.pi)])
    assert torch.allclose(gaussian_nll(err, std), expected)
