"""RSSMDynamics: the Dynamics protocol, unimix, KL balancing, resets and step/sequence agreement."""

import math

import pytest
import torch
from tensordict import TensorDict

from imwm.dynamics import Dynamics, RSSMDynamics, check_dynamics
from imwm.nn import unimix_logits

B, T, E, A = 3, 6, 10, 2


def make(**kw):
    args = dict(deter=16, stoch=4, classes=5, hidden=12, blocks=4, action_dim=A, embed_dim=E)
    args.update(kw)
    return RSSMDynamics(**args)


def batch(is_first_at=(0,)):
    embed = torch.randn(B, T, E)
    action = torch.nn.functional.one_hot(torch.randint(0, A, (B, T)), A).float()
    is_first = torch.zeros(B, T, 1, dtype=torch.bool)
    for t in is_first_at:
        is_first[:, t] = True
    return embed, action, is_first


def test_protocol_and_shapes():
    rssm = make()
    assert isinstance(rssm, Dynamics)
    check_dynamics(rssm)
    assert rssm.feat_dim == 4 * 5 + 16
    post, prior = rssm.observe(*batch())
    for state in (post, prior):
        assert state.batch_size == (B, T)
        assert state["deter"].shape == (B, T, 16)
        assert state["stoch"].shape == (B, T, 20)
        assert state["logits"].shape == (B, T, 4, 5)
    assert rssm.get_feat(post).shape == (B, T, rssm.feat_dim)
    nxt = rssm.img_step(post[:, -1], torch.zeros(B, A))
    assert nxt.batch_size == (B,) and nxt["stoch"].shape == (B, 20)
    p1, q1 = rssm.obs_step(rssm.initial(B), torch.zeros(B, A), torch.randn(B, E),
                           torch.ones(B, 1, dtype=torch.bool))
    assert p1.batch_size == q1.batch_size == (B,)
    assert rssm.entropy(post).shape == (B, T, 1)
    assert rssm.uncertainty(prior).shape == (B, T, 1)
    with pytest.raises(TypeError, match="missing"):
        check_dynamics(object())


def test_stoch_is_one_hot_and_logits_are_unimixed():
    rssm = make(unimix=0.01)
    post, prior = rssm.observe(*batch())
    for state in (post, prior):
        probs = state["logits"].exp()
        assert torch.allclose(probs.sum(-1), torch.ones(B, T, 4), atol=1e-5)
        assert probs.min() >= 0.01 / 5 - 1e-6
        one_hot = state["stoch"].detach().unflatten(-1, (4, 5))
        assert torch.equal(one_hot.sum(-1), torch.ones(B, T, 4))
        assert set(one_hot.unique().tolist()) <= {0.0, 1.0}


def test_gru_step_matches_torchrl_block_gru():
    rssm = make()
    stoch, deter, action = torch.randn(B, 20), torch.randn(B, 16), torch.randn(B, A) * 2
    ours = rssm._gru_step(stoch, deter, action)
    theirs = rssm.prior_net.rnn(stoch, deter, action)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_posterior_matches_torchrl_posterior():
    rssm = make(unimix=0.01)
    deter, embed = torch.randn(B, 16), torch.randn(B, E)
    ours = rssm._posterior_logits(deter, embed)
    theirs = unimix_logits(rssm.posterior_net._logits(deter, embed), 0.01)
    assert torch.allclose(ours, theirs, atol=1e-6)


def _state(logits):
    return TensorDict({"logits": logits}, batch_size=logits.shape[:2])


def test_kl_free_bits_hand_values():
    rssm = make()
    # one step with raw KL above free bits, one below; stoch=2 categoricals of 2 classes
    post = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    prior_far = torch.tensor([[0.01, 0.99], [0.01, 0.99]]).log()
    prior_near = torch.tensor([[0.4, 0.6], [0.5, 0.5]]).log()
    kl_far = 2 * (0.5 * math.log(0.5 / 0.01) + 0.5 * math.log(0.5 / 0.99))
    kl_near = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    q = _state(torch.stack([post, post]).unsqueeze(0))
    p = _state(torch.stack([prior_far, prior_near]).unsqueeze(0))
    loss, m = rssm.kl_loss(q, p, free_bits=1.0, dyn_scale=0.5, rep_scale=0.1)
    assert loss.shape == (1, 2)
    assert m["kl"][0].tolist() == pytest.approx([kl_far, kl_near], rel=1e-5)
    assert m["dyn"][0].tolist() == pytest.approx([kl_far, 1.0], rel=1e-5)
    assert loss[0].tolist() == pytest.approx([0.6 * kl_far, 0.6], rel=1e-5)


def test_kl_dyn_and_rep_stop_gradients():
    rssm = make()
    post_raw = torch.randn(2, 3, 4, 5, requires_grad=True)
    prior_raw = torch.randn(2, 3, 4, 5, requires_grad=True)

    def grads(dyn_scale, rep_scale):
        post_raw.grad = prior_raw.grad = None
        q = _state(torch.log_softmax(post_raw, -1))
        p = _state(torch.log_softmax(prior_raw, -1))
        loss, _ = rssm.kl_loss(q, p, free_bits=0.0, dyn_scale=dyn_scale, rep_scale=rep_scale)
        loss.sum().backward()
        return post_raw.grad.abs().sum(), prior_raw.grad.abs().sum()

    post_g, prior_g = grads(1.0, 0.0)  # dyn: only the prior learns
    assert post_g == 0 and prior_g > 0
    post_g, prior_g = grads(0.0, 1.0)  # rep: only the posterior learns
    assert post_g > 0 and prior_g == 0
    # below free bits nothing learns
    post_raw.grad = prior_raw.grad = None
    q = _state(torch.log_softmax(post_raw, -1))
    loss, _ = rssm.kl_loss(q, q, free_bits=1.0, dyn_scale=0.5, rep_scale=0.1)
    loss.sum().backward()
    assert post_raw.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="free_bits"):
        rssm.kl_loss(q, q, free_bits=-1.0, dyn_scale=0.5, rep_scale=0.1)


def test_observe_resets_where_is_first():
    rssm = make()
    embed, action, is_first = batch(is_first_at=(0, 3))
    post, _ = rssm.observe(embed, action, is_first)
    fresh, _ = rssm.observe(embed[:, 3:], action[:, 3:], is_first[:, 3:])
    # the step after a reset sees exactly what a fresh sequence sees
    assert torch.allclose(post["deter"][:, 3], fresh["deter"][:, 0], atol=1e-6)
    assert torch.allclose(post["logits"][:, 3], fresh["logits"][:, 0], atol=1e-6)
    # without the reset it differs (the test would catch a missing reset)
    no_reset, _ = rssm.observe(embed, action, batch(is_first_at=(0,))[2])
    assert not torch.allclose(no_reset["deter"][:, 3], fresh["deter"][:, 0], atol=1e-3)
    # a carried state is ignored where the first step is_first (same noise: same seed, same T)
    carried = post[:, 2]
    torch.manual_seed(5)
    a, _ = rssm.observe(embed[:, 3:], action[:, 3:], is_first[:, 3:], state=carried)
    torch.manual_seed(5)
    b, _ = rssm.observe(embed[:, 3:], action[:, 3:], is_first[:, 3:])
    assert torch.allclose(a["deter"], b["deter"]) and torch.equal(a["stoch"], b["stoch"])


def test_obs_step_over_time_equals_observe():
    rssm = make()
    embed, action, is_first = batch(is_first_at=(0, 4))
    post, prior = rssm.observe(embed, action, is_first)
    state = rssm.initial(B)
    for t in range(T):
        p, q = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t])
        assert torch.allclose(p["deter"], post["deter"][:, t], atol=1e-5)
        assert torch.allclose(p["logits"], post["logits"][:, t], atol=1e-5)
        assert torch.allclose(q["logits"], prior["logits"][:, t], atol=1e-5)
        state = post[:, t]  # same sample as the sequence path from here on


def test_img_step_deter_is_deterministic_and_prior_sampled():
    rssm = make()
    post, _ = rssm.observe(*batch())
    start = post[:, -1]
    action = torch.zeros(B, A)
    action[:, 1] = 1
    one, two = rssm.img_step(start, action), rssm.img_step(start, action)
    assert torch.equal(one["deter"], two["deter"])
    assert torch.equal(one["logits"], two["logits"])
    expected = rssm._prior_logits(rssm._gru_step(start["stoch"], start["deter"], action))
    assert torch.allclose(one["logits"], expected)


def test_gradients_reach_every_parameter():
    rssm = make()
    embed, action, is_first = batch()
    embed.requires_grad_(True)
    post, prior = rssm.observe(embed, action, is_first)
    kl, _ = rssm.kl_loss(post, prior, free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    (kl.sum() + (rssm.get_feat(post) * torch.randn(B, T, rssm.feat_dim)).sum()).backward()
    for name, param in rssm.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert embed.grad.abs().sum() > 0


def test_entropy_of_initial_state_is_uniform():
    rssm = make()
    state = rssm.initial(2)
    assert torch.allclose(rssm.entropy(state), torch.full((2, 1), 4 * math.log(5)))
    assert torch.equal(state["deter"], torch.zeros(2, 16))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="divisible by blocks"):
        make(deter=10, blocks=4)
    with pytest.raises(ValueError, match="unimix"):
        make(unimix=1.5)
    rssm = make()
    embed, action, is_first = batch()
    with pytest.raises(ValueError, match="action must have shape"):
        rssm.observe(embed, action[..., :1], is_first)
    with pytest.raises(ValueError, match="is_first"):
        rssm.observe(embed, action, is_first[..., 0])
    with pytest.raises(ValueError, match="embed"):
        rssm.observe(embed[0], action, is_first)


def test_other_layer_counts_match_torchrl_and_step_path():
    rssm = make(dyn_layers=2, obs_layers=2, img_layers=1)
    stoch, deter, action = torch.randn(B, 20), torch.randn(B, 16), torch.randn(B, A)
    ours = rssm._gru_step(stoch, deter, action)
    assert torch.allclose(ours, rssm.prior_net.rnn(stoch, deter, action), atol=1e-6)
    embed, action, is_first = batch(is_first_at=(0,))
    post, prior = rssm.observe(embed, action, is_first)
    state = rssm.initial(B)
    for t in range(T):
        p, q = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t])
        assert torch.allclose(p["logits"], post["logits"][:, t], atol=1e-5)
        assert torch.allclose(q["logits"], prior["logits"][:, t], atol=1e-5)
        state = post[:, t]
    (rssm.get_feat(post).sum() + prior["logits"].sum()).backward()
    for name, param in rssm.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
