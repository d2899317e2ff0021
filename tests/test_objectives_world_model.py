"""WorldModelLoss: keys, targets and alignment, scales, gradients, set_keys, learning."""

import pytest
import torch
from tensordict import TensorDict

from imwm.dynamics import RSSMDynamics
from imwm.objectives.world_model import WorldModelLoss
from imwm.world_model import WorldModel

# tests/ is on sys.path (pytest prepend import mode, no __init__.py)
from test_world_model import ScaledKLDynamics

A = 3


def total_loss(out):
    """TorchRL's idiom: the loss to optimise is the sum of the ``loss_*`` terms."""
    return sum(v for k, v in out.items() if k.startswith("loss_"))


def factory(embed_dim):
    return RSSMDynamics(deter=16, stoch=4, classes=4, hidden=16, blocks=2, action_dim=A,
                        embed_dim=embed_dim)


def vector_wm(**kw):
    return WorldModel.build((5,), A, kw.pop("dyn", factory), cnn_depth=2, mlp_units=16,
                            mlp_layers=1, **kw)


def batch(obs_shape=(5,), b=4, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    if len(obs_shape) == 3:
        obs = torch.randint(0, 256, (b, t, *obs_shape), dtype=torch.uint8, generator=g)
    else:
        obs = torch.randn(b, t, *obs_shape, generator=g) * 3
    is_first = torch.zeros(b, t, 1, dtype=torch.bool)
    is_first[:, 0] = True
    action = torch.nn.functional.one_hot(torch.randint(0, A, (b, t), generator=g), A).float()
    action[:, 0] = 0
    reward = torch.randint(0, 3, (b, t, 1), generator=g).float() * 2
    reward[:, 0] = 0
    is_terminal = torch.zeros(b, t, 1, dtype=torch.bool)
    is_terminal[0, -1] = True
    return TensorDict({"observation": obs, "action": action, "is_first": is_first,
                       "reward": reward, "is_terminal": is_terminal}, [b, t])


def test_output_keys_shapes_and_total():
    loss = WorldModelLoss(vector_wm())
    out = loss(batch())
    scalars = ["world_model_loss", "loss_image", "loss_reward", "loss_continue", "loss_kl",
               "kl_mean", "entropy_mean", "dyn", "rep"]
    for key in scalars:
        assert out[key].shape == (), key
    for key in ("model_loss", "kl", "entropy"):
        assert out[key].shape == (4,) and not out[key].requires_grad, key
    terms = {k: v for k, v in out.items() if k.startswith("loss_")}
    assert sorted(terms) == ["loss_continue", "loss_image", "loss_kl", "loss_reward"]
    assert all(v.requires_grad for v in terms.values()) and not out["world_model_loss"].requires_grad
    assert out["feat"].shape == (4, 6, loss.world_model.feat_dim) and not out["feat"].requires_grad
    assert out["posterior"].batch_size == (4, 6)
    total = out["loss_image"] + out["loss_reward"] + out["loss_continue"] + out["loss_kl"]
    assert torch.allclose(sum(terms.values()), total) and torch.allclose(out["world_model_loss"], total.detach())
    assert torch.allclose(out["model_loss"].mean(), out["world_model_loss"], rtol=1e-5)


def test_targets_are_aligned_with_the_replay_layout():
    wm = vector_wm()
    td = batch()
    out = WorldModelLoss(wm, free_bits=0.5)(td)
    feat = out["feat"]
    # reward[t] and 1 - is_terminal[t] are predicted from the state at t
    reward = wm.reward_head.loss(wm.reward_head(feat), td["reward"]).mean()
    cont = wm.continue_head.loss(wm.continue_head(feat), 1.0 - td["is_terminal"].float()).mean()
    image = wm.decoder.loss(wm.decoder(feat), td["observation"]).mean()
    kl_loss, metrics = wm.dynamics.kl_loss(out["posterior"], out["prior"], free_bits=0.5,
                                            dyn_scale=0.5, rep_scale=0.1)
    assert torch.allclose(out["loss_reward"], reward, rtol=1e-5)
    assert torch.allclose(out["loss_continue"], cont, rtol=1e-5)
    assert torch.allclose(out["loss_image"], image, rtol=1e-5)
    assert torch.allclose(out["loss_kl"], kl_loss.mean(), rtol=1e-5)
    assert torch.allclose(out["kl"], metrics["kl"].mean(1), rtol=1e-5)
    entropy = wm.dynamics.entropy(out["posterior"]).squeeze(-1).mean(1)
    assert torch.allclose(out["entropy"], entropy, rtol=1e-5)


def test_continue_target_is_one_minus_is_terminal():
    wm = vector_wm()
    with torch.no_grad():
        wm.continue_head.mlp.net[-1].weight.zero_()
        wm.continue_head.mlp.net[-1].bias.fill_(8.0)  # predicts "continues"
    td = batch()
    td["is_terminal"].zero_()
    low = WorldModelLoss(wm)(td)["loss_continue"]
    td["is_terminal"].fill_(True)
    high = WorldModelLoss(wm)(td)["loss_continue"]
    assert low < 1e-3 and high > 7.9


def continue_head_at_logit_8():
    """A world model whose continue head outputs logit 8 everywhere, and a batch with one
    terminal record of 24."""
    wm = vector_wm()
    with torch.no_grad():
        wm.continue_head.mlp.net[-1].weight.zero_()
        wm.continue_head.mlp.net[-1].bias.fill_(8.0)
    return wm, batch()


def test_terminal_weight_scales_only_terminal_records():
    """Hand-computed: with the head at logit 8, a non-terminal record costs softplus(-8) and a
    terminal one softplus(8); weight w on the terminal ones gives (n_cont*sp(-8) + w*n_term*sp(8))/N."""
    wm, td = continue_head_at_logit_8()
    sp = torch.nn.functional.softplus
    for w in (1.0, 10.0):
        got = WorldModelLoss(wm, terminal_weight=w)(td)["loss_continue"]
        want = (23 * sp(torch.tensor(-8.0)) + w * sp(torch.tensor(8.0))) / 24
        assert torch.allclose(got, want, rtol=1e-5), (w, got, want)
    with pytest.raises(ValueError, match="terminal_weight"):
        WorldModelLoss(wm, terminal_weight=-1.0)


def test_scales_and_gradients_to_every_parameter_group():
    torch.manual_seed(0)
    wm = WorldModel.build((3, 64, 64), A, factory, cnn_depth=2, mlp_units=16, mlp_layers=1)
    loss = WorldModelLoss(wm, free_bits=0.0)
    opt = torch.optim.Adam(wm.parameters(), lr=1e-3)
    got_grad = set()
    td = batch((3, 64, 64), b=2, t=3)
    for _ in range(2):  # the zero-initialised reward output blocks its MLP's gradient on step 1
        opt.zero_grad()
        total_loss(loss(td)).backward()
        got_grad |= {n for n, p in wm.named_parameters()
                     if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
    missing = {n for n, _ in wm.named_parameters()} - got_grad
    assert not missing, missing
    # image_scale=0 cuts the decoder off
    wm.zero_grad()
    total_loss(WorldModelLoss(wm, image_scale=0.0)(td)).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in wm.decoder.parameters())


def test_dynamics_kl_and_metrics_flow_through():
    wm = vector_wm(dyn=lambda e: ScaledKLDynamics(factory(e)))
    out = WorldModelLoss(wm, free_bits=0.0)(batch())
    assert torch.allclose(out["boundary_rate"], torch.tensor(0.25))
    kl_loss, _ = wm.dynamics.inner.kl_loss(out["posterior"], out["prior"], free_bits=0.0,
                                            dyn_scale=0.5, rep_scale=0.1)
    assert torch.allclose(out["loss_kl"], 2 * kl_loss.mean(), rtol=1e-5)


def test_set_keys_and_bad_inputs():
    loss = WorldModelLoss(vector_wm())
    td = batch()
    td.rename_key_("observation", "pixels")
    with pytest.raises(KeyError, match="observation"):
        loss(td)
    loss.set_keys(observation="pixels")
    assert loss(td)["world_model_loss"].isfinite()
    with pytest.raises(ValueError, match="not an accepted"):
        loss.set_keys(nonsense="x")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        loss(td[0])
    td["reward"] = td["reward"].squeeze(-1)
    with pytest.raises(ValueError, match="reward must have shape"):
        loss(td)
    with pytest.raises(ValueError, match="free_bits"):
        WorldModelLoss(vector_wm(), free_bits=-1.0)


@pytest.mark.parametrize("obs_shape", [(5,), (3, 64, 64)])
def test_loss_decreases_on_a_fixed_batch(obs_shape):
    torch.manual_seed(0)
    wm = WorldModel.build(obs_shape, A, factory, cnn_depth=4, mlp_units=32, mlp_layers=1)
    loss = WorldModelLoss(wm)
    small = len(obs_shape) == 3  # keep the conv case fast
    td = batch(obs_shape, b=2 if small else 4, t=6 if small else 8, seed=1)
    opt = torch.optim.Adam(wm.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        out = loss(td)
        opt.zero_grad()
        total_loss(out).backward()
        opt.step()
        keys = ("world_model_loss", "loss_image", "loss_reward")
        history.append({k: out[k].item() for k in keys})
    first, last = history[0], history[-1]
    assert last["world_model_loss"] < 0.7 * first["world_model_loss"], (first, last)
    assert last["loss_image"] < first["loss_image"]
    assert last["loss_reward"] < first["loss_reward"]


def _cartpole_sequences(n_seq=16, length=24, seed=0):
    """Random-policy CartPole episodes in the replay layout, cut into [n_seq, length] slices."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = torch.Generator().manual_seed(seed)
    obs_l, act_l, rew_l, first_l, term_l = [], [], [], [], []
    obs, _ = env.reset(seed=seed)
    first, action, reward, term = True, torch.zeros(2), 0.0, False
    while len(obs_l) < n_seq * length:
        obs_l.append(torch.as_tensor(obs, dtype=torch.float32))
        act_l.append(action)
        rew_l.append(reward)
        first_l.append(first)
        term_l.append(term)
        if term:
            obs, _ = env.reset()
            first, action, reward, term = True, torch.zeros(2), 0.0, False
            continue
        a = int(torch.randint(0, 2, (), generator=rng))
        obs, reward, term, trunc, _ = env.step(a)
        action = torch.nn.functional.one_hot(torch.tensor(a), 2).float()
        first = False
        term = term or trunc
    n = n_seq * length
    return TensorDict(
        {
            "observation": torch.stack(obs_l[:n]).view(n_seq, length, 4),
            "action": torch.stack(act_l[:n]).view(n_seq, length, 2),
            "reward": torch.tensor(rew_l[:n]).view(n_seq, length, 1),
            "is_first": torch.tensor(first_l[:n]).view(n_seq, length, 1),
            "is_terminal": torch.tensor(term_l[:n]).view(n_seq, length, 1),
        },
        [n_seq, length],
    )


@pytest.mark.slow
def test_world_model_learns_cartpole_dynamics():
    """On real CartPole transitions the model learns to reconstruct and to spot terminals."""
    torch.manual_seed(0)
    data = _cartpole_sequences()
    wm = WorldModel.build((4,), 2, lambda e: RSSMDynamics(deter=64, stoch=8, classes=8, hidden=64,
                          blocks=4, action_dim=2, embed_dim=e),
                          cnn_depth=2, mlp_units=64, mlp_layers=2)
    loss = WorldModelLoss(wm)
    opt = torch.optim.Adam(wm.parameters(), lr=1e-3)
    first = None
    for _ in range(200):
        out = loss(data)
        opt.zero_grad()
        total_loss(out).backward()
        opt.step()
        first = first or {k: out[k].item() for k in ("loss_image", "loss_continue")}
    last = {k: out[k].item() for k in ("loss_image", "loss_continue")}
    assert last["loss_image"] < 0.2 * first["loss_image"], (first, last)
    with torch.no_grad():
        cont = torch.sigmoid(wm.continue_head(loss(data)["feat"]))
    terminal = data["is_terminal"]
    assert terminal.any()
    # terminal states (pole fallen / cart out) are told apart from the rest (1 in ~20 frames)
    at_end, elsewhere = cont[terminal].mean(), cont[~terminal].mean()
    assert at_end < elsewhere - 0.15, (at_end, elsewhere)


def test_continue_discount_is_the_non_terminal_target():
    """Hand-computed: logit 8 against target 0.997 costs 0.997*sp(-8) + 0.003*sp(8) per
    non-terminal record; the terminal record's target stays 0 (cost sp(8))."""
    wm, td = continue_head_at_logit_8()
    sp = torch.nn.functional.softplus
    g = 0.997
    got = WorldModelLoss(wm, continue_discount=g)(td)["loss_continue"]
    non_terminal = g * sp(torch.tensor(-8.0)) + (1 - g) * sp(torch.tensor(8.0))
    want = (23 * non_terminal + sp(torch.tensor(8.0))) / 24
    assert torch.allclose(got, want, rtol=1e-5), (got, want)
    assert got > WorldModelLoss(wm)(td)["loss_continue"]  # logit 8 overshoots the soft target
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="continue_discount"):
            WorldModelLoss(wm, continue_discount=bad)
