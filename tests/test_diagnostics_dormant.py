"""dormant_ratio on crafted activations; DormantMonitor hooks, metric names, clean detach."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from imwm.agent.actor import Actor
from imwm.agent.critic import Critic
from imwm.diagnostics import DormantMonitor, dormant_ratio, neuron_scores
from imwm.dynamics import RSSMDynamics
from imwm.nn import MLP


def test_scores_and_ratio_on_hand_values():
    a = torch.tensor([[0.0, 1.0, 2.0, 5.0], [0.0, -1.0, -2.0, -5.0]])  # |a| means 0, 1, 2, 5; layer mean 2
    assert torch.allclose(neuron_scores(a), torch.tensor([0.0, 0.5, 1.0, 2.5]))
    assert dormant_ratio(a, tau=0.5).item() == 0.5  # s <= tau: 0 and 0.5
    assert dormant_ratio(a, tau=0.0).item() == 0.25
    assert dormant_ratio(a, tau=0.025).item() == 0.25


def test_known_dead_units_give_known_ratio():
    a = torch.randn(64, 10).abs() + 0.5
    a[:, [1, 4, 7]] = 0.0
    assert dormant_ratio(a).item() == pytest.approx(0.3)
    a[:, 2] = 1e-3  # nearly dead: score ~1e-3 / 0.7 < 0.025
    assert dormant_ratio(a).item() == pytest.approx(0.4)
    assert dormant_ratio(torch.zeros(5, 6)).item() == 1.0  # an all-zero layer is all dormant


def test_conv_channels_count_once_averaged_over_batch_and_space():
    a = torch.ones(4, 3, 6, 6)
    a[:, 0] = 0.0  # channel 0 dead everywhere
    a[:, 1, :3] = 0.0  # channel 1 dead on half of the map: mean 0.5 -> score 0.6, not dormant
    assert dormant_ratio(a, channel_dim=1).item() == pytest.approx(1 / 3)
    assert dormant_ratio(a.permute(0, 2, 3, 1), channel_dim=-1).item() == pytest.approx(1 / 3)
    # treating every pixel as a neuron would have counted the half-dead channel too
    assert dormant_ratio(a.reshape(4, -1)).item() > 1 / 3 + 0.1


def test_bad_tau():
    for tau in (-0.1, 1.5):
        with pytest.raises(ValueError, match="tau"):
            dormant_ratio(torch.ones(2, 2), tau=tau)
        with pytest.raises(ValueError, match="tau"):
            DormantMonitor(modules={"actor": nn.Linear(2, 2)}, tau=tau)
    with pytest.raises(ValueError, match="every"):
        DormantMonitor(modules={"actor": nn.Linear(2, 2)}, every=0)


def _tiny_agent(units=8):
    """World model parts of the shapes imwm uses (conv encoder on 16x16 frames, RSSM, heads)."""
    dyn = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=8, blocks=2, action_dim=3, embed_dim=32)
    encoder = nn.Sequential(
        nn.Conv2d(3, 4, 4, 2, 1), nn.GroupNorm(1, 4), nn.SiLU(), nn.Conv2d(4, 8, 4, 2, 1), nn.SiLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
    )
    decoder = MLP(dyn.feat_dim, 12, units=units, layers=2)
    world = SimpleNamespace(
        encoder=encoder,
        dynamics=dyn,
        decoder=decoder,
        reward_head=MLP(dyn.feat_dim, 5, units=units, layers=2),
        continue_head=MLP(dyn.feat_dim, 1, units=units, layers=1),
    )
    agent = SimpleNamespace(
        world_model=world,
        actor=Actor(dyn.feat_dim, 3, mlp_units=units, mlp_layers=2),
        critic=Critic(dyn.feat_dim, mlp_units=units, mlp_layers=2, num_bins=11),
    )

    def update(batch_size=3, time=4):
        w = agent.world_model
        obs = torch.rand(batch_size, time, 3, 16, 16)
        embed = w.encoder(obs.flatten(0, 1)).unflatten(0, (batch_size, time))
        is_first = torch.zeros(batch_size, time, 1, dtype=torch.bool)
        post, _ = w.dynamics.observe(embed, torch.zeros(batch_size, time, 3), is_first)
        feat = w.dynamics.get_feat(post)
        w.decoder(feat), w.reward_head(feat), w.continue_head(feat)
        agent.actor(feat.detach()), agent.critic(feat.detach())
        return feat

    return agent, update


def test_monitor_metric_names_and_ranges():
    agent, update = _tiny_agent()
    monitor = DormantMonitor(agent, tau=0.025)
    with monitor.track():
        feat = update()
    m = monitor.metrics()
    for name in (
        "dormant/world_tokens", "dormant/world_deter", "dormant/world_stoch", "dormant/world_all",
        "dormant/world_penultimate", "dormant/actor_all", "dormant/critic_all", "dormant/world_rew_layer0",
        "dormant/world_rew_layer1", "dormant/world_cont_layer0", "dormant/world_enc_layer0", "dormant/world_enc_layer1",
        "dormant/world_dec_layer1", "dormant/actor_layer0", "dormant/actor_layer1", "dormant/critic_layer1",
    ):
        assert name in m, name
        assert m[name].ndim == 0 and 0.0 <= m[name].item() <= 1.0
    assert m["dormant/world_penultimate"] == m["dormant/world_dec_layer1"]
    # stoch: 2 one-hot categoricals of 4 classes, so the layer's mean activity is 1/4 and a unit is
    # dormant (mean <= 0.025 / 4) exactly when its class was never drawn in the 12 steps
    stoch = feat[..., : agent.world_model.dynamics.stoch_dim].detach().flatten(0, 1)
    never_drawn = (stoch.sum(0) == 0).float().mean()
    assert m["dormant/world_stoch"].item() == pytest.approx(never_drawn.item())


def test_monitor_finds_crafted_dead_units():
    agent, update = _tiny_agent(units=8)
    ln = agent.actor.net.net[1]  # first LayerNorm of the actor's MLP
    with torch.no_grad():
        ln.weight[:3] = 0.0
        ln.bias[:3] = 0.0  # -> SiLU(0) = 0: three of eight units of actor layer 0 are dead
    monitor = DormantMonitor(agent)
    with monitor.track():
        update()
    m = monitor.metrics()
    assert m["dormant/actor_layer0"].item() == pytest.approx(3 / 8)
    assert m["dormant/actor_all"].item() >= 3 / 16 - 1e-6  # pooled over the actor's 16 hidden units


def test_hooks_are_attached_only_while_measuring():
    agent, update = _tiny_agent()
    dyn = agent.world_model.dynamics
    monitor = DormantMonitor(agent, every=3)
    modules = [agent.actor, agent.critic, agent.world_model.encoder, dyn, agent.world_model.decoder]

    def count_hooks():
        return sum(len(m._forward_hooks) for root in modules for m in root.modules())

    assert count_hooks() == 0 and monitor.num_hooks == 0
    seen = []

    def fake_update():
        seen.append((monitor.num_hooks, count_hooks(), "observe" in dyn.__dict__))
        return update()

    monitor.step(1, fake_update)  # not due: nothing attached
    assert seen[-1] == (0, 0, False)
    assert monitor.pop_metrics() == {}
    monitor.step(3, fake_update)  # due
    assert seen[-1][0] > 0 and seen[-1][1] > 0 and seen[-1][2]
    assert count_hooks() == 0 and monitor.num_hooks == 0 and "observe" not in dyn.__dict__
    assert "dormant/actor_all" in monitor.pop_metrics()
    assert monitor.pop_metrics() == {}
    # an exception inside the measured code still removes everything
    with pytest.raises(RuntimeError, match="boom"):
        with monitor.track():
            raise RuntimeError("boom")
    assert count_hooks() == 0 and monitor.num_hooks == 0 and "observe" not in dyn.__dict__


def test_activity_accumulates_over_calls():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
        lin.bias.zero_()
    net = nn.Sequential(lin, nn.ReLU())
    monitor = DormantMonitor(modules={"actor": net})
    with monitor.track():
        net(torch.tensor([[1.0, -1.0]]))  # unit 1 inactive here ...
        net(torch.tensor([[1.0, 1.0]]))  # ... active here
    assert monitor.metrics()["dormant/actor_layer0"].item() == 0.0
    with monitor.track():
        net(torch.tensor([[1.0, -1.0], [2.0, -3.0]]))
    assert monitor.metrics()["dormant/actor_layer0"].item() == 0.5
