"""The intrinsic transforms appended to a real TorchRL model-based env (``append_transform``)."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Composite, OneHot, Unbounded
from torchrl.envs import ModelBasedEnvBase

from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward

LATENT, ACTIONS, BATCH = 6, 3, 4


class _Transition(nn.Module):
    """Gaussian latent transition: next mean from (state, action); std from the state (softplus)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(LATENT + ACTIONS, 2 * LATENT)

    def forward(self, state, action):
        mean, raw_std = self.net(torch.cat([state, action], -1)).chunk(2, -1)
        std = nn.functional.softplus(raw_std) + 0.1
        next_state = mean + std * torch.randn_like(std)
        return next_state, std.mean(-1, keepdim=True), mean.tanh().sum(-1, keepdim=True), std.mean(-1, keepdim=True)


class _LatentEnv(ModelBasedEnvBase):
    """A small model-based env in TorchRL's own pattern (see ``ModelBasedEnvBase``'s docstring)."""

    def __init__(self):
        transition = TensorDictModule(
            _Transition(),
            in_keys=["state", "action"],
            out_keys=["state", "uncertainty", "reward", ("decoded", "image_std")],
        )
        feat = TensorDictModule(nn.Identity(), in_keys=["state"], out_keys=["feat"])
        super().__init__(TensorDictSequential(transition, feat), batch_size=torch.Size([BATCH]))
        self.observation_spec = Composite(
            state=Unbounded((BATCH, LATENT)),
            feat=Unbounded((BATCH, LATENT)),
            uncertainty=Unbounded((BATCH, 1)),
            decoded=Composite(image_std=Unbounded((BATCH, 1)), shape=(BATCH,)),
            shape=(BATCH,),
        )
        self.state_spec = Composite(state=Unbounded((BATCH, LATENT)), shape=(BATCH,))
        self.action_spec = OneHot(ACTIONS, shape=(BATCH, ACTIONS))
        self.reward_spec = Unbounded((BATCH, 1))

    def _reset(self, tensordict=None, **kwargs):
        td = TensorDict(batch_size=self.batch_size, device=self.device)
        state = torch.randn(*self.batch_size, LATENT)
        td.set("state", state)
        td.set("feat", state.clone())
        td.set("uncertainty", torch.ones(*self.batch_size, 1))
        td.set(("decoded", "image_std"), torch.ones(*self.batch_size, 1))
        return td


def _transforms():
    return [
        AdaptiveIntrinsicReward(beta_max=0.5),
        LexaStyleIntrinsicReward(),
        DisagreementIntrinsicReward(feat_dim=LATENT, action_dim=ACTIONS, target_dim=LATENT, hidden=8, ensemble_size=3),
    ]


@pytest.mark.parametrize("transform", _transforms(), ids=lambda t: type(t).__name__)
def test_rollout_of_model_based_env_with_transform(transform):
    env = _LatentEnv().append_transform(transform)
    assert not transform.training  # TransformedEnv puts transforms in eval mode: statistics frozen
    env.rollout(2)
    assert not transform.initialized
    env.train()  # TorchRL convention (as RNDTransform): statistics update in training mode
    assert "intrinsic_reward" in env.full_reward_spec.keys()
    assert "total_reward" in env.full_reward_spec.keys()
    td = env.rollout(5)
    assert td.batch_size == (BATCH, 5)
    intrinsic = td["next", "intrinsic_reward"]
    assert intrinsic.shape == (BATCH, 5, 1)
    assert torch.isfinite(intrinsic).all() and intrinsic.abs().sum() > 0
    assert torch.allclose(td["next", "total_reward"], td["next", "reward"] + intrinsic)
    if isinstance(transform, DisagreementIntrinsicReward):
        # the reward for reaching s_{t+1} is the spread of the predictions from (s_t, a_t)
        expected = transform.disagreement(td["feat"], td["action"])
        assert torch.allclose(intrinsic, expected, atol=1e-6)
    if isinstance(transform, AdaptiveIntrinsicReward):
        assert transform.num_updates.item() == 5  # one statistics update per env step


def test_transform_can_overwrite_reward_in_place_and_use_uncertainty_fn():
    # A pipeline whose loss reads ("next", "reward") and whose env carries only the latent state.
    t = AdaptiveIntrinsicReward(
        beta_max=0.5,
        uncertainty_key="no_such_key",
        uncertainty_fn=lambda state: state.abs().mean(-1, keepdim=True),
        state_key="state",
        total_reward_key="reward",
    )
    env = _LatentEnv().append_transform(t)  # eval mode: scale stays at beta_max, mix at 0 (explore)
    td = env.rollout(3)
    state_next = td["next", "state"]
    raw = td["next", "reward"] - td["next", "intrinsic_reward"]
    assert torch.allclose(
        td["next", "intrinsic_reward"], (0.5 * state_next.abs().mean(-1, keepdim=True)).clamp(-10, 10), atol=1e-5
    )
    assert raw.shape == (BATCH, 3, 1)


def test_missing_parent_reward_key_is_named():
    env = _LatentEnv()
    with pytest.raises(KeyError, match="extrinsic"):
        env.append_transform(AdaptiveIntrinsicReward(reward_key="extrinsic")).full_reward_spec
