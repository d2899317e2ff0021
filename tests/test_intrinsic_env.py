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


def test_with_torchrl_dreamer_env_and_rssm_prior_v3():
    """TorchRL's own DreamerEnv (imagination env of its DreamerV3) with its RSSMPriorV3."""
    from torchrl.envs.model_based.dreamer import DreamerEnv
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import WorldModelWrapper
    from torchrl.modules.models.model_based import RSSMPriorV3

    cats, classes, belief_dim, n = 4, 4, 8, 3
    prior = RSSMPriorV3(hidden_dim=8, rnn_hidden_dim=belief_dim, num_categoricals=cats, num_classes=classes, action_dim=2)
    imagination = WorldModelWrapper(
        TensorDictModule(prior, in_keys=["state", "belief", "action"], out_keys=["prior_logits", "state", "belief"]),
        TensorDictModule(TorchRLMLP(in_features=cats * classes + belief_dim, out_features=1, num_cells=8, depth=1),
                         in_keys=["state", "belief"], out_keys=["reward"]),
    )
    env = DreamerEnv(imagination, prior_shape=(cats * classes,), belief_shape=(belief_dim,))
    env.observation_spec = Composite(
        state=Unbounded(cats * classes), belief=Unbounded(belief_dim), prior_logits=Unbounded((cats, classes))
    )
    env.state_spec = Composite(state=Unbounded(cats * classes), belief=Unbounded(belief_dim))
    env.action_spec = OneHot(2)
    env.reward_spec = Unbounded((1,))

    def prior_entropy(logits):  # the RSSM's uncertainty: entropy of the prior categoricals
        logp = logits.log_softmax(-1)
        return -(logp.exp() * logp).sum((-2, -1)).unsqueeze(-1)

    adaptive = AdaptiveIntrinsicReward(uncertainty_fn=prior_entropy, state_key="prior_logits")
    disagreement = DisagreementIntrinsicReward(feat_dim=cats * classes, action_dim=2, target_dim=cats * classes,
                                               feat_key="state", hidden=8, ensemble_size=3)
    start = TensorDict({"state": torch.zeros(n, cats * classes), "belief": torch.zeros(n, belief_dim),
                        "prior_logits": torch.zeros(n, cats, classes)}, [n])
    for transform in (adaptive, disagreement):
        tenv = env.append_transform(transform)
        tenv.train()
        with torch.no_grad():
            td = tenv.rollout(4, auto_reset=False, tensordict=start.clone())
        r = td["next", "intrinsic_reward"]
        assert r.shape == (n, 4, 1) and torch.isfinite(r).all() and r.abs().sum() > 0
        assert torch.allclose(td["next", "total_reward"], td["next", "reward"] + r)
    # frozen statistics: the reward is the documented formula of the prior entropy of each next state
    tenv = env.append_transform(adaptive)  # eval mode
    with torch.no_grad():
        td = tenv.rollout(4, auto_reset=False, tensordict=start.clone())
    n = prior_entropy(td["next", "prior_logits"]) / (adaptive.uncertainty_ema + adaptive.epsilon)
    w = adaptive.mix
    expected = (adaptive.scale * ((1 - w) * n + w / (n + adaptive.epsilon))).clamp(-10, 10)
    assert torch.allclose(td["next", "intrinsic_reward"], expected, atol=1e-5)
