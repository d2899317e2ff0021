"""The Linear -> LayerNorm -> SiLU MLP."""

import pytest
import torch
from torch import nn

from imwm.nn import MLP


def test_structure_and_shapes():
    mlp = MLP(6, 3, units=16, layers=2)
    kinds = [type(m) for m in mlp.net]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.SiLU] * 2 + [nn.Linear]
    assert mlp(torch.randn(4, 5, 6)).shape == (4, 5, 3)
    assert MLP(6, None, units=16, layers=1)(torch.randn(2, 6)).shape == (2, 16)


def test_zero_init_output_and_gradients_reach_every_parameter():
    mlp = MLP(6, 4, units=8, layers=2, out_scale=0.0)
    x = torch.randn(10, 6)
    assert torch.equal(mlp(x), torch.zeros(10, 4))
    (mlp(x) * torch.randn(10, 4)).sum().backward()
    # with a zero output layer only the output layer gets gradient on the first step
    assert mlp.net[-1].weight.grad.abs().sum() > 0
    mlp2 = MLP(6, 4, units=8, layers=2)
    (mlp2(x) ** 2).sum().backward()
    for name, p in mlp2.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="layers"):
        MLP(4, 2, units=8, layers=-1)
    with pytest.raises(ValueError, match="last dim 4"):
        MLP(4, 2, units=8, layers=1)(torch.randn(3, 5))
