"""ReDo: only dormant units are recycled, the function is unchanged at the reset, Adam moments reset."""

import pytest
import torch
from torch import nn

from imwm.diagnostics import DormantMonitor, ReDo
from imwm.nn import MLP


def _trained_adam(net, x, steps=2):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()
    return opt


def test_redo_recycles_exactly_the_dormant_units_of_an_mlp():
    torch.manual_seed(0)
    mlp = MLP(6, 4, units=8, layers=2)  # Linear -> LayerNorm -> SiLU, twice, then Linear
    lin0, ln0, lin1 = mlp.net[0], mlp.net[1], mlp.net[3]
    dead = [2, 5]
    with torch.no_grad():
        ln0.weight[dead] = 0.0
        ln0.bias[dead] = 0.0
    x = torch.randn(32, 6)
    opt = _trained_adam(mlp, x)
    with torch.no_grad():  # the Adam steps moved the gains a little; make the units dead again
        ln0.weight[dead] = 0.0
        ln0.bias[dead] = 0.0
    monitor = DormantMonitor(modules={"actor": mlp}, tau=0.025, every=10)
    redo = ReDo(monitor, [opt], reset_period=5)
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    moments = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in mlp.parameters()}
    y_before = mlp(x)

    out = monitor.step(5, lambda: mlp(x))  # due because of ReDo (5 % 10 != 0)
    assert out.shape == (32, 4)
    metrics = monitor.pop_metrics()
    assert metrics["dormant/actor_layer0"].item() == pytest.approx(2 / 8)
    assert metrics["dormant/redo_recycled"].item() == 2

    after = mlp.state_dict()
    keep = [i for i in range(8) if i not in dead]
    # incoming rows re-drawn, untouched elsewhere
    assert not torch.equal(after["net.0.weight"][dead], before["net.0.weight"][dead])
    assert torch.equal(after["net.0.weight"][keep], before["net.0.weight"][keep])
    # norm gain/bias of the recycled units reset to 1/0, others untouched
    assert torch.equal(after["net.1.weight"][dead], torch.ones(2))
    assert torch.equal(after["net.1.bias"][dead], torch.zeros(2))
    assert torch.equal(after["net.1.weight"][keep], before["net.1.weight"][keep])
    # outgoing columns zeroed, others untouched
    assert torch.equal(after["net.3.weight"][:, dead], torch.zeros(8, 2))
    assert torch.equal(after["net.3.weight"][:, keep], before["net.3.weight"][:, keep])
    # every other tensor identical (second hidden layer, output layer)
    for name in ("net.4.weight", "net.4.bias", "net.6.weight", "net.6.bias"):
        assert torch.equal(after[name], before[name]), name
    # Adam moments zeroed exactly at the recycled entries
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.all(opt.state[lin0.weight][key][dead] == 0)
        assert torch.equal(opt.state[lin0.weight][key][keep], moments[lin0.weight][key][keep])
        assert torch.all(opt.state[lin1.weight][key][:, dead] == 0)
        assert torch.equal(opt.state[lin1.weight][key][:, keep], moments[lin1.weight][key][:, keep])
        assert torch.equal(opt.state[mlp.net[6].weight][key], moments[mlp.net[6].weight][key])
    # (the function moves a little: LayerNorm statistics include the re-drawn rows)
    assert not torch.allclose(mlp(x), y_before)
    # the units are alive again
    with monitor.track():
        mlp(x)
    assert monitor.metrics()["dormant/actor_layer0"].item() == 0.0


def test_redo_on_conv_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    with torch.no_grad():
        net[0].bias[1] = -100.0  # channel 1 never fires
    x = torch.randn(4, 2, 8, 8)
    y_before = net(x)
    w0, w2 = net[0].weight.clone(), net[2].weight.clone()
    monitor = DormantMonitor(modules={"critic": net}, every=1)
    ReDo(monitor, [], reset_period=1)
    monitor.step(1, lambda: net(x))
    m = monitor.pop_metrics()
    assert m["dormant/critic_layer0"].item() == pytest.approx(0.25)
    assert m["dormant/redo_recycled"].item() == 1
    assert not torch.equal(net[0].weight[1], w0[1]) and net[0].bias[1].item() == 0.0
    assert torch.equal(net[0].weight[[0, 2, 3]], w0[[0, 2, 3]])
    assert torch.all(net[2].weight[:, 1] == 0) and torch.equal(net[2].weight[:, [0, 2, 3]], w2[:, [0, 2, 3]])
    assert torch.allclose(net(x), y_before, atol=1e-5)


def test_redo_not_due_and_bad_period():
    monitor = DormantMonitor(modules={"actor": nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))}, every=100)
    redo = ReDo(monitor, [], reset_period=7)
    assert not redo.due(0) and redo.due(7) and not redo.due(8)
    assert monitor.due(7) and monitor.due(100) and not monitor.due(8)
    with pytest.raises(ValueError, match="reset_period"):
        ReDo(monitor, [], reset_period=0)
