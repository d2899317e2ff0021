"""Boundary maths: hand-computed values, straight-through gradient, forcing and precedence, schedules."""

import math

import pytest
import torch

from imwm.vta.boundary import (
    boundary_sample,
    force_scale_at,
    gumbel_sampling,
    log_density_concrete,
    regularize_boundary,
    straight_through,
    temperature_at,
)


def test_gumbel_sampling_matches_formula_with_same_noise():
    log_alpha = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    gen = torch.Generator().manual_seed(3)
    out = gumbel_sampling(log_alpha, temp=0.5, margin=1e-4, generator=gen)
    gen = torch.Generator().manual_seed(3)
    u = torch.empty_like(log_alpha).uniform_(1e-4, 1 - 1e-4, generator=gen)
    expected = (log_alpha - torch.log(-torch.log(u))) / 0.5
    torch.testing.assert_close(out, expected)


def test_gumbel_margin_bounds_noise():
    # with u in [m, 1-m], g = -log(-log u) lies in [-log(-log m), -log(-log(1-m))]
    m = 0.4
    out = gumbel_sampling(torch.zeros(10000, 2), temp=1.0, margin=m)
    lo, hi = -math.log(-math.log(m)), -math.log(-math.log(1 - m))
    assert out.min() >= lo - 1e-5 and out.max() <= hi + 1e-5


def test_gumbel_softmax_frequencies_follow_probabilities():
    torch.manual_seed(0)
    log_alpha = torch.log(torch.tensor([0.8, 0.2])).expand(20000, 2)
    sample, _ = boundary_sample(log_alpha, temp=1.0)
    freq = sample[:, 0].mean().item()
    assert abs(freq - 0.8) < 0.015


def test_straight_through_value_is_onehot_and_gradient_is_soft():
    logits = torch.tensor([[0.2, 1.0], [1.5, -0.5]], requires_grad=True)
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    prob = torch.softmax(logits, -1)
    hard = straight_through(prob)
    assert torch.equal(hard.detach(), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    (g_st,) = torch.autograd.grad((hard * w).sum(), logits)
    (g_soft,) = torch.autograd.grad((torch.softmax(logits, -1) * w).sum(), logits)
    torch.testing.assert_close(g_st, g_soft)


def test_boundary_sample_eval_mode_is_argmax_of_logits():
    log_alpha = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    sample, log_sample = boundary_sample(log_alpha, temp=2.0, sample=False)
    assert torch.equal(sample, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(log_sample, torch.log_softmax(log_alpha / 2.0, -1))


def test_log_density_concrete_hand_computed():
    # K=2, log_alpha = (log 0.7, log 0.3), sample y = (0.6, 0.4), temp = 0.5
    la = torch.log(torch.tensor([0.7, 0.3]))
    ls = torch.log(torch.tensor([0.6, 0.4]))
    e0 = math.log(0.7) - 0.5 * math.log(0.6)
    e1 = math.log(0.3) - 0.5 * math.log(0.4)
    lse = math.log(math.exp(e0) + math.exp(e1))
    expected = e0 + e1 - 2 * lse
    got = log_density_concrete(la, ls, 0.5)
    assert abs(got.item() - expected) < 1e-5
    # exact density: + log(1!) + log(temp) - sum(log y)
    exact = expected + math.log(0.5) - (math.log(0.6) + math.log(0.4))
    assert abs(log_density_concrete(la, ls, 0.5, exact=True).item() - exact) < 1e-5


def test_exact_concrete_density_integrates_to_one():
    # the binary Concrete density over the simplex (parametrised by y0 in (0,1)) integrates to 1
    la = torch.tensor([0.4, -0.3])
    y0 = torch.linspace(1e-4, 1 - 1e-4, 200001, dtype=torch.float64)
    ls = torch.log(torch.stack([y0, 1 - y0], -1))
    dens = log_density_concrete(la.double().expand_as(ls), ls, 1.5, exact=True).exp()  # temp > 1: no edge mass
    integral = torch.trapezoid(dens, y0).item()
    assert abs(integral - 1.0) < 2e-3


def test_regularize_boundary_forcing_and_precedence():
    logits = torch.tensor([[0.5, -0.5]] * 4)
    seg_len = torch.tensor([[10.0], [10.0], [3.0], [3.0]])
    seg_num = torch.tensor([[5.0], [1.0], [5.0], [1.0]])
    out = regularize_boundary(logits, seg_len, seg_num, max_seg_len=10, max_seg_num=5, force_scale=4.0)
    expected = torch.tensor([[4.5, -0.5], [4.5, -0.5], [0.5, 3.5], [0.5, -0.5]])
    torch.testing.assert_close(out, expected)


def test_regularize_boundary_zero_force_is_identity():
    logits = torch.randn(3, 7, 2)
    out = regularize_boundary(logits, torch.full((3, 7, 1), 99.0), torch.full((3, 7, 1), 99.0), 2, 2, 0.0)
    assert out is logits


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_seg_len=0, max_seg_num=5, force_scale=1.0), "max_seg_len"),
        (dict(max_seg_len=5, max_seg_num=0, force_scale=1.0), "max_seg_num"),
        (dict(max_seg_len=5, max_seg_num=5, force_scale=-1.0), "force_scale"),
    ],
)
def test_regularize_boundary_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        regularize_boundary(torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 1), **kwargs)


def test_regularize_boundary_bad_shapes():
    with pytest.raises(ValueError, match="last dim 2"):
        regularize_boundary(torch.zeros(1, 3), torch.zeros(1, 1), torch.zeros(1, 1), 5, 5, 1.0)


@pytest.mark.parametrize("temp", [0.0, -1.0, float("nan")])
def test_bad_temperature(temp):
    with pytest.raises(ValueError, match="temp"):
        gumbel_sampling(torch.zeros(2), temp)


def test_force_scale_schedule():
    assert force_scale_at(5, force_scale=10.0) == 10.0
    kw = dict(force_scale=0.0, schedule="linear", start=2.0, decay_updates=100)
    assert force_scale_at(0, **kw) == 2.0
    assert force_scale_at(50, **kw) == pytest.approx(1.0)
    assert force_scale_at(100, **kw) == 0.0 and force_scale_at(10_000, **kw) == 0.0
    kw["schedule"] = "exponential"
    assert force_scale_at(0, **kw) == 2.0
    assert force_scale_at(50, **kw) == pytest.approx(2.0 * 0.1)
    assert force_scale_at(100, **kw) == 0.0
    with pytest.raises(ValueError, match="schedule"):
        force_scale_at(0, force_scale=1.0, schedule="cosine", decay_updates=10)
    with pytest.raises(ValueError, match="force_decay_updates"):
        force_scale_at(0, force_scale=1.0, schedule="linear", decay_updates=0)


def test_temperature_annealing():
    assert temperature_at(1000, temp=1.0, temp_min=0.5, anneal_rate=0.0) == 1.0
    assert temperature_at(0, temp=1.0, temp_min=0.5, anneal_rate=1e-3) == 1.0
    assert temperature_at(100, temp=1.0, temp_min=0.5, anneal_rate=1e-3) == pytest.approx(math.exp(-0.1))
    assert temperature_at(10**6, temp=1.0, temp_min=0.5, anneal_rate=1e-3) == 0.5
    with pytest.raises(ValueError, match="anneal_rate"):
        temperature_at(0, temp=1.0, temp_min=0.5, anneal_rate=-1.0)


def test_bernoulli_and_rate_prior_kl():
    from imwm.vta.boundary import bernoulli_kl, rate_prior_kl

    p = torch.tensor([0.5, 0.1])
    expected = torch.tensor([0.5 * math.log(0.5 / 0.1) + 0.5 * math.log(0.5 / 0.9), 0.0])
    torch.testing.assert_close(bernoulli_kl(p, 0.1), expected)
    # a sure detector firing at the target rate on average pays nothing
    sure = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert rate_prior_kl(sure, 0.25).abs().max() < 1e-5
    mask = torch.tensor([[False, True, True, True]] * 2)
    torch.testing.assert_close(rate_prior_kl(sure, 0.25, mask), bernoulli_kl(torch.tensor([0.0, 1 / 3]), 0.25))
    # a sequence with no counted step (all episode starts) has no rate to judge and pays nothing
    none_counted = torch.tensor([[False] * 4, [False, True, True, True]])
    torch.testing.assert_close(rate_prior_kl(sure, 0.25, none_counted), bernoulli_kl(torch.tensor([0.25, 1 / 3]), 0.25))
    with pytest.raises(ValueError, match="boundary_rate"):
        bernoulli_kl(p, 0.0)
