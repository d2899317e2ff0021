"""``agent.precision=bfloat16``: the update's forward passes under bfloat16 autocast."""

import warnings

import pytest
import torch

from imwm.training.build_model import build_agent

from test_agent_dreamer import batch, tiny_cfg

TERMS = ("world_model_loss", "loss_image", "loss_reward", "loss_continue", "loss_kl", "loss_critic")


def _pair(obs_shape, **agent):
    torch.manual_seed(0)
    full = build_agent(tiny_cfg(**agent), obs_shape=obs_shape, action_dim=3)
    half = build_agent(tiny_cfg(precision="bfloat16", **agent), obs_shape=obs_shape, action_dim=3)
    half.load_state_dict(full.state_dict())
    return full, half


@pytest.mark.parametrize("obs_shape", [(4,), (3, 64, 64)], ids=["vector", "pixels"])
def test_bfloat16_update_is_close_to_float32_and_keeps_float32_state(obs_shape):
    full, half = _pair(obs_shape)
    data = batch(obs_shape, B=2, T=4)
    torch.manual_seed(1)
    m_full, _ = full.train_step(data.clone())
    torch.manual_seed(1)
    m_half, signals = half.train_step(data.clone())
    for key in TERMS:
        if key in m_full:
            assert m_half[key].dtype == torch.float32, key
            torch.testing.assert_close(m_half[key], m_full[key], rtol=0.03, atol=0.03, msg=key)
    assert all(v.dtype == torch.float32 for v in signals.values())  # replay priorities
    # master weights, gradients and optimiser moments stay float32; only the compute is bfloat16
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    state = [t for s in half.model_opt.state.values() for t in s.values() if torch.is_tensor(t)]
    assert state and {t.dtype for t in state} == {torch.float32}
    moved = [not torch.equal(a, b) for a, b in zip(half.parameters(), full.parameters())]
    assert any(moved)  # the two runs took different (but close) steps: bfloat16 really ran
    # a loss that came out bit-identical would mean autocast never reached a matmul
    assert not torch.equal(m_full["loss_image"], m_half["loss_image"])


def test_bfloat16_phases_trace_whole(monkeypatch):
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    torch.manual_seed(0)
    agent = build_agent(tiny_cfg(compile="default", precision="bfloat16"), obs_shape=(4,), action_dim=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*running it eagerly")  # no fallback
        metrics, _ = agent.train_step(batch((4,), B=2, T=4))
    assert agent.compiled and torch.isfinite(metrics["world_model_loss"])


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(ValueError, match=r"^agent.precision: must be one of \['float32', 'bfloat16'\] \(got 'float16'\)$"):
        build_agent(tiny_cfg(precision="float16"), obs_shape=(4,), action_dim=3)
