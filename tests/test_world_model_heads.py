"""Reward (two-hot, zero-init) and continue (Bernoulli) heads."""

import math

import pytest
import torch

from imwm.nn import symlog, two_hot_encode
from imwm.world_model import ContinueHead, RewardHead


def test_reward_head_starts_at_zero_and_has_255_bins():
    head = RewardHead(feat_dim=6, mlp_units=8, mlp_layers=2)
    logits = head(torch.randn(4, 5, 6))
    assert logits.shape == (4, 5, 255)
    assert torch.equal(head.mean(logits), torch.zeros(4, 5, 1))
    loss = head.loss(logits, torch.ones(4, 5, 1))
    assert loss.shape == (4, 5)
    assert torch.allclose(loss, torch.full((4, 5), math.log(255)), atol=1e-5)


def test_reward_head_learns_a_reward():
    torch.manual_seed(0)
    head = RewardHead(feat_dim=4, mlp_units=16, mlp_layers=1)
    feat = torch.randn(64, 4)
    reward = (feat[:, :1] > 0).float() * 10.0 - 1.0  # rewards -1 or 9
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        head.loss(head(feat), reward).mean().backward()
        opt.step()
    pred = head.mean(head(feat))
    assert (pred - reward).abs().mean() < 0.5


def test_reward_loss_target_is_two_hot_of_symlog():
    head = RewardHead(feat_dim=3, mlp_units=4, mlp_layers=1)
    reward = torch.tensor([[2.5]])
    target = two_hot_encode(symlog(reward.squeeze(-1)), head.two_hot.bins)
    logits = torch.randn(1, 255)
    expected = -(target * torch.log_softmax(logits, -1)).sum(-1)
    assert torch.allclose(head.loss(logits, reward), expected)


def test_continue_head_bce_hand_value():
    head = ContinueHead(feat_dim=3, mlp_units=4, mlp_layers=1)
    assert head(torch.randn(2, 7, 3)).shape == (2, 7, 1)
    logit = torch.tensor([[0.0], [2.0]])
    target = torch.tensor([[1.0], [0.0]])
    expected = torch.tensor([math.log(2), math.log(1 + math.exp(2.0))])
    assert torch.allclose(head.loss(logit, target), expected)
    assert torch.allclose(head.prob(logit), torch.sigmoid(logit))
    with pytest.raises(ValueError, match="continue target"):
        head.loss(logit, target.squeeze(-1))
