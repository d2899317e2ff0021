"""AleVectorEnv against ale-py's own vector env: terminal frames kept, resets not mixed in."""
import numpy as np
import pytest
import torch
from ale_py.vector_env import AtariVectorEnv

from imwm.envs.ale_vector import AleVectorEnv


def _raw(num_envs, max_frames):
    return AtariVectorEnv("breakout", num_envs, img_height=64, img_width=64, grayscale=False,
                          stack_num=1, frameskip=4, repeat_action_probability=0.0, noop_max=0,
                          reward_clipping=False, use_fire_reset=False, max_num_frames_per_episode=max_frames)


def _chw(frame):
    return torch.from_numpy(frame[0]).permute(2, 0, 1)


def test_terminal_observation_is_preserved_and_reset_is_separate():
    # Episodes truncate after 20 frames = 5 agent steps. The terminal frame must be the one
    # ale-py returns on the done step, and the reset frame must appear only after the
    # collector-style partial reset, at the root of the next step.
    env = AleVectorEnv("breakout", 2, sticky=0.0, max_episode_frames=20, seed=3)
    raw = _raw(2, 20)
    raw_obs, _ = raw.reset(seed=3)
    actions = torch.tensor([1, 3, 2, 0, 1, 3, 2, 1, 0, 3])
    td = env.reset()
    assert torch.equal(td["observation"][0], _chw(raw_obs[0]))
    seen_done = 0
    for t, a in enumerate(actions.tolist()):
        td["action"] = torch.nn.functional.one_hot(torch.tensor([a, a]), env.num_actions)
        td = env.step(td)
        raw_obs, raw_rew, raw_term, raw_trunc, _ = raw.step(np.array([a, a]))
        assert torch.equal(td["next", "observation"][1], _chw(raw_obs[1])), f"step {t}"
        assert td["next", "truncated"].flatten().tolist() == raw_trunc.tolist()
        if td["next", "done"].any():
            seen_done += 1
            terminal = td["next", "observation"].clone()
            td = env.step_mdp(td)
            td["_reset"] = td["done"].clone()
            td = env.reset(td)
            # ale-py NextStep autoreset: the next raw step returns the reset frame.
            raw_reset, *_ = raw.step(np.array([0, 0]))
            assert torch.equal(td["observation"][0], _chw(raw_reset[0]))
            assert not torch.equal(td["observation"], terminal)
            assert not td["done"].any()
        else:
            td = env.step_mdp(td)
    assert seen_done == 2


def test_stepping_a_done_env_without_reset_raises():
    env = AleVectorEnv("pong", 1, max_episode_frames=8)
    td = env.reset()
    td = env.rand_step(td)
    td = env.rand_step(env.step_mdp(td))
    assert td["next", "done"].all()
    with pytest.raises(RuntimeError, match="must be reset"):
        env.rand_step(env.step_mdp(td))


def test_partial_reset_leaves_other_envs_running():
    env = AleVectorEnv("pong", 2, seed=0)
    td = env.rollout(3)[..., -1]
    td = env.step_mdp(td)
    td["_reset"] = torch.tensor([[True], [False]])
    out = env.reset(td)
    assert not out["done"].any()
    out = env.rand_step(out)  # env 1 keeps its episode: no error, no done
    assert not out["next", "done"].any()


def test_seed_reproducible_and_validation():
    a = AleVectorEnv("pong", 1, seed=1).rollout(6, policy=lambda td: td.set("action", torch.eye(6)[[2]]))
    b = AleVectorEnv("pong", 1, seed=1).rollout(6, policy=lambda td: td.set("action", torch.eye(6)[[2]]))
    assert torch.equal(a["next", "observation"], b["next", "observation"])
    with pytest.raises(ValueError, match="frame_skip"):
        AleVectorEnv("pong", 1, frame_skip=0)
