"""collector=async through the real entry point: envs in a second process, the train ratio exact,
weights reaching the worker, and a resume that continues."""
import torch

from imwm.training.config import validate_config
from imwm.configs import compose_config

from test_train_script import train


def test_async_run_keeps_the_train_ratio_and_resumes(tmp_path):
    first = train(tmp_path, "total_env_steps=200", "collector=async")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    # prefill 100, then 0.5 updates per env step (train_ratio 16 / batch 4x8): exactly as sync
    assert ckpt["counters"]["env_steps"] == 200 and ckpt["counters"]["updates"] == 50
    second = train(tmp_path, "total_env_steps=300", "collector=async")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "at env step 200" in second.stdout
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["counters"]["env_steps"] == 300 and ckpt["counters"]["updates"] == 100


def test_pushed_weights_reach_the_worker():
    import functools

    from torchrl.collectors import AsyncCollector

    from imwm.envs import make_env
    from imwm.training.build_model import build_agent

    make = functools.partial(make_env, name="cartpole", num_envs=1, seed=0)
    agent = build_agent(compose_config(["preset=debug"]), obs_shape=(4,), action_dim=2)
    collector = AsyncCollector(make, agent.policy(1, action_dtype=make().action_spec.dtype), frames_per_batch=50,
                               total_frames=-1, env_device="cpu", storing_device="cpu")
    try:
        out = agent.actor.net.net[-1]
        with torch.no_grad():  # a policy that always pushes left (99% after unimix)
            out.weight.zero_()
            out.bias.copy_(torch.tensor([50.0, -50.0]))
        shares = []
        for i, batch in enumerate(collector):
            shares.append(batch["action"][..., 0].float().mean().item())
            collector.update_policy_weights_()
            if i == 2:
                break
    finally:
        collector.shutdown()
    # the first batch may have been collected before the push; the third one is after it
    assert shares[2] > 0.95, shares


def test_collector_choices():
    import pytest

    from imwm.errors import ConfigError

    plain = validate_config(compose_config(["preset=debug"]))
    assert plain["collector"] == "sync"
    with pytest.raises(ConfigError, match=r"collector: must be one of \['sync', 'async', 'distributed'\]"):
        validate_config(compose_config(["preset=debug", "collector=threads"]))
