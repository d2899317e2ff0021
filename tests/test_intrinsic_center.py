"""Centring of the intrinsic rewards (IntrinsicRewardTransform center=True): formula and why it is needed."""

import pytest
import torch
from tensordict import TensorDict

from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward
from imwm.objectives.returns import lambda_return


def _lexa_td(std):
    return TensorDict({"reward": torch.zeros_like(std), "decoded": {"image_std": std}}, std.shape[:-1])


def test_running_mean_is_subtracted_on_hand_values():
    t = LexaStyleIntrinsicReward(center=True, center_decay=0.5)  # reward 0: weight 1, r_int = std
    out = t(_lexa_td(torch.tensor([[1.0], [3.0]])))
    assert t.baseline.item() == pytest.approx(2.0)  # first call: the mean itself
    assert torch.allclose(out["intrinsic_reward"], torch.tensor([[-1.0], [1.0]]))
    assert torch.allclose(out["total_reward"], out["reward"] + out["intrinsic_reward"])
    out = t(_lexa_td(torch.tensor([[5.0], [7.0]])))  # b = 2 + 0.5 * (6 - 2) = 4
    assert t.baseline.item() == pytest.approx(4.0)
    assert torch.allclose(out["intrinsic_reward"], torch.tensor([[1.0], [3.0]]))
    t.eval()  # frozen in eval mode
    t(_lexa_td(torch.tensor([[100.0]])))
    assert t.baseline.item() == pytest.approx(4.0)
    assert "intrinsic/baseline" in t.metrics() and "intrinsic/baseline" not in LexaStyleIntrinsicReward().metrics()


@pytest.mark.parametrize("cls", [AdaptiveIntrinsicReward, LexaStyleIntrinsicReward, DisagreementIntrinsicReward])
def test_every_type_takes_center_and_checks_decay(cls):
    kwargs = {"feat_dim": 4, "action_dim": 2, "target_dim": 3} if cls is DisagreementIntrinsicReward else {}
    assert cls(center=True, **kwargs).center
    with pytest.raises(ValueError, match="center_decay"):
        cls(center=True, center_decay=1.0, **kwargs)


def test_centring_stops_a_positive_bonus_from_paying_the_agent_to_avoid_a_terminal_goal():
    # Two imagined paths, H = 15: (a) reaches the goal (reward 1, terminal) at step 3, (b) wanders on.
    # The bonus is ~constant (0.54 per step, as the RSSM adaptive bonus measured on the chain).
    h, bonus = 15, 0.54
    extrinsic = torch.zeros(2, h + 1, 1)
    extrinsic[0, 3] = 1.0
    cont = torch.ones(2, h + 1, 1)
    cont[0, 3:] = 0.0  # the episode ends on arrival at the goal
    value = torch.zeros(2, h + 1, 1)

    def returns(intrinsic):
        # an ended episode gets no reward after its end, as the continue head predicts
        total = extrinsic + intrinsic * torch.cat([torch.ones(2, 1, 1), cont[:, :-1]], 1)
        return lambda_return(total, value, cont, gamma=0.997, lmbda=0.95)[:, 0, 0]

    raw = torch.full((2, h + 1, 1), bonus)
    goal, wander = returns(raw)
    assert wander > goal  # the failure mode: avoiding the goal keeps the bonus coming
    t = LexaStyleIntrinsicReward(center=True)
    for _ in range(5):
        centred = t(_lexa_td(raw.clone()))["intrinsic_reward"]
    goal, wander = returns(centred)
    assert goal > wander and wander == pytest.approx(0.0, abs=1e-5)
    assert goal == pytest.approx((0.997 * 0.95) ** 2, abs=1e-4)  # the goal's reward, two steps of gamma * lambda
