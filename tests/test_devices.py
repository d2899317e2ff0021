"""The same checks on every device this machine has: CPU always, CUDA where a GPU is present.

CUDA cases carry the ``cuda`` marker (``pytest -m cuda`` runs only them; ``scripts/gpu_check.sh``
does); without a GPU they are skipped and the CPU cases still run.
"""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from imwm.dynamics import RSSMDynamics
from imwm.replay import CuriousSampler, UniformSliceSampler
from imwm.training.build_model import build_agent

from test_agent_dreamer import batch, tiny_cfg
from test_torchrl_contract import _inputs, _transform, records

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("obs_shape", [(4,), (3, 64, 64)])
def test_agent_update_on_device(device, obs_shape):
    agent = build_agent(tiny_cfg(), obs_shape=obs_shape, action_dim=3, device=device)
    metrics, signals = agent.train_step(batch(obs_shape).to(device))
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert signals.device == torch.device(device) or signals["model_loss"].device.type == device
    assert all(p.device.type == device for p in agent.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_agent_policy_acts_on_device(device):
    agent = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3, device=device)
    policy = agent.policy(2)
    td = TensorDict({"observation": torch.randn(2, 4), "is_init": torch.ones(2, 1, dtype=torch.bool)}, [2])
    out = policy(td)
    assert out["action"].shape == (2, 3) and torch.all(out["action"].sum(-1) == 1)


@pytest.mark.parametrize("device", DEVICES)
def test_rssm_observe_and_imagine_on_device(device):
    rssm = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=2, embed_dim=8).to(device)
    post, prior = rssm.observe(torch.randn(3, 5, 8, device=device), torch.zeros(3, 5, 2, device=device),
                               torch.zeros(3, 5, 1, dtype=torch.bool, device=device))
    nxt = rssm.img_step(post[:, -1], torch.zeros(3, 2, device=device))
    assert post["deter"].device.type == device and nxt["stoch"].shape == (3, 8)
    loss, _ = rssm.kl_loss(post, prior)
    loss.mean().backward()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampler", ["curious", "uniform"])
def test_samplers_over_a_device_storage(device, sampler):
    make = CuriousSampler if sampler == "curious" else UniformSliceSampler
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(40, device=device), sampler=make(40, slice_len=4),
                                    batch_size=12)
    buffer.extend(records(40).to(device))
    sample = buffer.sample()
    assert sample.device.type == device and sample.shape == (12,)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["adaptive", "lexa", "disagreement"])
def test_intrinsic_transforms_on_device(device, kind):
    transform = _transform(kind).to(device)
    out = transform(_inputs().to(device))
    assert out["total_reward"].device.type == device and torch.isfinite(out["total_reward"]).all()
