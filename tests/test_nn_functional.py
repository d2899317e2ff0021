"""symlog / symexp and the DreamerV3 two-hot regression (symlog-space bins)."""

import math

import pytest
import torch
from torchrl.modules import SymExpTwoHot

from imwm.nn import (
    SymlogTwoHot,
    symexp,
    symlog,
    symlog_bins,
    symlog_two_hot_loss,
    symlog_two_hot_mean,
    two_hot_decode,
    two_hot_encode,
)


def test_symlog_values_and_inverse():
    x = torch.tensor([-1e6, -100.0, -1.0, 0.0, 0.5, 3.0, 1e6], dtype=torch.float64)
    assert torch.allclose(symlog(x), torch.sign(x) * torch.log1p(x.abs()))
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-10)
    assert torch.allclose(symlog(symexp(x[1:-1])), x[1:-1], rtol=1e-10)


def test_symlog_gradient_is_one_at_zero():
    x = torch.zeros(3, requires_grad=True)
    symlog(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_symlog_bins_dreamerv3_support():
    bins = symlog_bins()
    assert bins.shape == (255,)
    assert bins[0] == -20 and bins[-1] == 20 and bins[127] == 0
    assert torch.allclose(bins.diff(), torch.full((254,), 40 / 254), atol=1e-5)
    assert torch.equal(bins, -bins.flip(0))
    with pytest.raises(ValueError, match="num_bins"):
        symlog_bins(1)


def test_two_hot_hand_computed():
    bins = symlog_bins(5, 2.0)  # [-2, -1, 0, 1, 2]
    enc = two_hot_encode(torch.tensor([0.5, 0.25, -1.0, 3.0, -7.0]), bins)
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.5, 0.0],
            [0.0, 0.0, 0.75, 0.25, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.0],  # clipped to the support
            [1.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    assert torch.allclose(enc, expected)


def test_symlog_two_hot_target_lives_in_symlog_space():
    # raw reward e^0.5 - 1 has symlog 0.5: halfway between bins 0 and 1
    bins = symlog_bins(5, 2.0)
    logits = torch.zeros(1, 5, requires_grad=True)
    loss = symlog_two_hot_loss(logits, torch.tensor([[math.exp(0.5) - 1]]), bins)
    loss.sum().backward()
    target = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0]])
    # d CE / d logits = softmax - target
    assert torch.allclose(logits.grad, torch.full((1, 5), 0.2) - target, atol=1e-6)
    assert torch.allclose(loss, torch.tensor([math.log(5)]))


def test_two_hot_round_trip_255_bins():
    head = SymlogTwoHot()
    y = torch.tensor([-3000.0, -12.5, -1.0, 0.0, 0.01, 1.0, 7.0, 420.0])
    encoded = two_hot_encode(symlog(y), head.bins)
    assert torch.allclose(encoded.sum(-1), torch.ones(8))
    assert ((encoded > 0).sum(-1) <= 2).all()
    logits = (encoded + 1e-12).log()
    assert torch.allclose(two_hot_decode(logits, head.bins), symlog(y), atol=1e-4)
    assert torch.allclose(head.mean(logits).squeeze(-1), y, rtol=1e-3, atol=1e-4)


def test_uniform_logits_decode_to_exact_zero():
    head = SymlogTwoHot()
    assert torch.equal(head.mean(torch.zeros(6, 255)), torch.zeros(6, 1))


def test_loss_is_minimised_by_the_two_hot_target():
    head = SymlogTwoHot()
    y = torch.tensor([[2.0], [-0.3]])
    good = (two_hot_encode(symlog(y.squeeze(-1)), head.bins) + 1e-9).log()
    assert (head.loss(good, y) < head.loss(torch.zeros(2, 255), y)).all()


def test_differs_from_torchrl_raw_space_variant():
    # TorchRL's SymExpTwoHot interpolates in raw space between symexp-spaced bins; for a target
    # between bins the weights differ from the paper's symlog-space interpolation.
    ours = SymlogTwoHot()
    theirs = SymExpTwoHot()
    y = torch.tensor([5.0])
    ours_t = two_hot_encode(symlog(y), ours.bins)
    theirs_t = theirs.encode(y)
    assert ours_t.argmax() == theirs_t.argmax()
    assert not torch.allclose(ours_t, theirs_t, atol=1e-3)


def test_bad_shapes_raise():
    head = SymlogTwoHot()
    with pytest.raises(ValueError, match="num_bins=255"):
        head.loss(torch.zeros(3, 10), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="target shape"):
        head.loss(torch.zeros(3, 255), torch.zeros(4))


def test_uniform_two_hot_equals_torchrl_encoder_on_the_dreamer_support():
    from torchrl.modules.models.model_based import two_hot_encode

    from imwm.nn.functional import symlog_bins, uniform_two_hot

    bins = symlog_bins(255, 20.0)
    x = torch.cat([torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 8,
                   bins[:5], torch.tensor([-25.0, 25.0, 0.0])])
    got, want = uniform_two_hot(x, bins), two_hot_encode(x, bins)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(len(x)), atol=2e-5, rtol=0)
