"""ChannelLayerNorm: the norm over axis 1 shared by the image networks and the VTA detector."""

import pytest
import torch
from torch import nn

from imwm.nn.norm import ChannelLayerNorm


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 4, 3)])
def test_normalises_axis_one_like_layer_norm_on_moved_channels(shape):
    torch.manual_seed(0)
    norm = ChannelLayerNorm(5, eps=1e-3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(*shape)
    ref = nn.functional.layer_norm(x.movedim(1, -1), (5,), norm.weight, norm.bias, 1e-3).movedim(-1, 1)
    torch.testing.assert_close(norm(x), ref)
    plain = ChannelLayerNorm(5)(x)  # unit gain, zero bias: every position has mean 0 and variance 1
    torch.testing.assert_close(plain.mean(1), torch.zeros_like(plain.mean(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.var(1, unbiased=False), torch.ones_like(plain.mean(1)), atol=1e-3, rtol=0)


def test_gradient_reaches_input_and_affine_parameters():
    norm = ChannelLayerNorm(3)
    x = torch.randn(2, 3, 4, requires_grad=True)
    (norm(x) * torch.randn(2, 3, 4)).sum().backward()
    assert x.grad.abs().sum() > 0 and norm.weight.grad.abs().sum() > 0 and norm.bias.grad.abs().sum() > 0


def test_wrong_channel_count_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"expected \[N, 3, \.\.\.\], got shape \(2, 4, 5\)"):
        ChannelLayerNorm(3)(torch.zeros(2, 4, 5))


def test_reads_checkpoints_with_the_older_nested_layout():
    # VTA checkpoints written before the norm was shared hold ``<prefix>norm.weight``
    net = nn.Sequential(nn.Conv1d(2, 3, 1), ChannelLayerNorm(3))
    old = {"0.weight": torch.ones(3, 2, 1), "0.bias": torch.zeros(3),
           "1.norm.weight": torch.tensor([1.0, 2.0, 3.0]), "1.norm.bias": torch.tensor([0.1, 0.2, 0.3])}
    net.load_state_dict(old)  # strict: nothing missing, nothing unexpected
    torch.testing.assert_close(net[1].weight.detach(), torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(net[1].bias.detach(), torch.tensor([0.1, 0.2, 0.3]))
    assert set(net.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias"}
