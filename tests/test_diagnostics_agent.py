"""DormantMonitor and ReDo on the real DreamerAgent (RSSM and VTA), as the training loop uses them."""

import pytest
import torch

from imwm.training.build_intrinsic import build_dormant

from test_intrinsic_agent import chain_batch, make_agent  # noqa: E402  (tests dir is on sys.path)

DOCUMENTED_METRICS = (  # the names DormantMonitor's docstring promises
    "dormant/world_tokens", "dormant/world_deter", "dormant/world_stoch", "dormant/world_all",
    "dormant/world_penultimate", "dormant/actor_all", "dormant/critic_all", "dormant/world_rew_layer0",
    "dormant/actor_layer0", "dormant/critic_layer0",
)


def _hooks(agent):
    return sum(len(m._forward_hooks) for m in agent.modules())


@pytest.mark.parametrize("dynamics", ["rssm", "vta"])
def test_maybe_measure_on_the_real_agent(dynamics):
    torch.manual_seed(0)
    agent = make_agent(dynamics, learned_std=False)
    monitor = build_dormant({"enable": True, "tau": 0.025, "every": 2}, agent)
    batch = chain_batch()
    agent.train_step(batch)
    assert monitor.maybe_measure(batch, 1) == {}  # not due: nothing attached, nothing run
    metrics = monitor.maybe_measure(batch, 2)
    for name in DOCUMENTED_METRICS:
        assert name in metrics, name
        assert 0.0 <= metrics[name].item() <= 1.0
    assert any(k.startswith("dormant/world_enc_layer") for k in metrics)
    assert any(k.startswith("dormant/world_dec_layer") for k in metrics)
    assert _hooks(agent) == 0 and monitor.num_hooks == 0
    assert "observe" not in agent.world_model.dynamics.__dict__
    agent.train_step(batch)  # the agent trains normally afterwards


def test_measuring_the_update_itself_and_redo_with_the_agents_optimizers():
    torch.manual_seed(0)
    agent = make_agent("rssm", learned_std=False)
    monitor = build_dormant({"enable": True, "tau": 0.5, "every": 100, "redo": {"enable": True, "reset_period": 2}},
                            agent)
    assert monitor.redo.optimizers == [agent.model_opt, agent.actor_opt, agent.critic_opt]
    batch = chain_batch()
    monitor.step(1, agent.train_step, batch)
    assert monitor.pop_metrics() == {}

    def silence_two_units():  # LayerNorm gain and bias 0 -> SiLU(0) = 0: dormant at any tau
        for mlp in (agent.actor.net.net, agent.critic.net.net):
            with torch.no_grad():
                mlp[1].weight[:2] = 0.0
                mlp[1].bias[:2] = 0.0

    silence_two_units()
    metrics, _ = monitor.step(2, agent.train_step, batch)  # ReDo due: measured on this update, then recycled
    dormant = monitor.pop_metrics()
    assert "dormant/actor_all" in dormant and "dormant/critic_all" in dormant
    assert dormant["dormant/redo_recycled"].item() >= 4
    # the same by hand, to compare weights right before and after the recycle
    silence_two_units()
    with monitor.track():
        agent.train_step(batch)
    layers = {"critic_layer0": agent.critic.net.net[0], "actor_layer0": agent.actor.net.net[0]}
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    monitor.redo.recycle()
    recycled_somewhere = False
    for name, layer in layers.items():
        scores, _ = monitor.last_scores[name]
        recycled = torch.nonzero(scores <= 0.5).flatten()
        kept = torch.nonzero(scores > 0.5).flatten()
        w = layer.weight.detach()
        assert torch.equal(w[kept], before[name][kept]), name
        if recycled.numel():
            recycled_somewhere = True
            assert not torch.equal(w[recycled], before[name][recycled]), name
    assert recycled_somewhere
    assert _hooks(agent) == 0
    metrics, _ = agent.train_step(batch)
    assert torch.isfinite(metrics["world_model_loss"])


def test_dead_conv_channels_of_the_real_image_encoder_count_once_each():
    from imwm.diagnostics import DormantMonitor

    torch.manual_seed(0)
    agent = make_agent("rssm", learned_std=False)
    norm = agent.world_model.encoder.net[1]  # conv -> channel norm -> SiLU: zero gain and shift kill a channel
    channels = norm.weight.shape[0]
    with torch.no_grad():
        norm.weight[[0, 2]] = 0.0
        norm.bias[[0, 2]] = 0.0
    metrics = DormantMonitor(agent, tau=0.025).measure(chain_batch())
    # SiLU(0) = 0 at every pixel of the two channels: each is one dormant neuron, whatever the map size
    # (a monitor that took the last dim, the width, as the neuron axis would find no dead column: 0)
    assert metrics["dormant/world_enc_layer0"].item() == pytest.approx(2 / channels)
