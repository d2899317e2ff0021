"""Collector batches -> DreamerV3 records, on hand-made batches with known answers."""
import pytest
import torch
from tensordict import TensorDict

from imwm.training.layout import DreamerRecordLayout, finished_episodes


def make_batch(obs, next_obs, is_init, reward, terminated, truncated, n_actions=3):
    """obs etc. are [N, T] ints; observations are 1-D [1] floats holding the frame number."""
    obs = torch.tensor(obs, dtype=torch.float32)
    n, t = obs.shape
    action = torch.nn.functional.one_hot(torch.arange(n * t).view(n, t) % n_actions, n_actions).float()
    term = torch.tensor(terminated).bool().unsqueeze(-1)
    trunc = torch.tensor(truncated).bool().unsqueeze(-1)
    return TensorDict({
        "observation": obs.unsqueeze(-1),
        "action": action,
        "is_init": torch.tensor(is_init).bool().unsqueeze(-1),
        "next": {
            "observation": torch.tensor(next_obs, dtype=torch.float32).unsqueeze(-1),
            "reward": torch.tensor(reward, dtype=torch.float32).unsqueeze(-1),
            "terminated": term, "truncated": trunc, "done": term | trunc,
            "episode_reward": torch.zeros(n, t, 1), "step_count": torch.zeros(n, t, 1, dtype=torch.int64),
        },
    }, batch_size=[n, t])


def test_episode_end_mid_batch_and_at_edge():
    layout = DreamerRecordLayout(num_envs=2)
    # env 0: frames 0 1 2 | terminal at step 1 (obs 2), reset obs 10, 11, 12(edge, terminal)
    # env 1: frames 20..24, no end.
    b1 = make_batch(
        obs=[[0, 1, 10, 11], [20, 21, 22, 23]],
        next_obs=[[1, 2, 11, 12], [21, 22, 23, 24]],
        is_init=[[1, 0, 1, 0], [1, 0, 0, 0]],
        reward=[[1, 2, 3, 4], [5, 6, 7, 8]],
        terminated=[[0, 1, 0, 1], [0, 0, 0, 0]],
        truncated=[[0, 0, 0, 0], [0, 0, 0, 0]],
    )
    r = layout(b1)
    # env 0 records: 0 1 2* | 10 11 12* ; env 1: 20 21 22 23 24 -- envs contiguous.
    assert r["observation"].squeeze(-1).tolist() == [0, 1, 2, 10, 11, 12, 20, 21, 22, 23, 24]
    assert r["is_first"].squeeze(-1).tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert r["is_terminal"].squeeze(-1).tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert r["is_last"].squeeze(-1).tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert r["reward"].squeeze(-1).tolist() == [0, 1, 2, 0, 3, 4, 0, 5, 6, 7, 8]
    assert r["traj_ids"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    # The action stored with o_{t+1} is a_t; first records carry zeros.
    a = b1["action"]
    assert torch.equal(r["action"][0], torch.zeros(3))
    assert torch.equal(r["action"][1], a[0, 0]) and torch.equal(r["action"][2], a[0, 1])
    assert torch.equal(r["action"][4], a[0, 2]) and torch.equal(r["action"][7], a[1, 0])
    assert r["is_first"].dtype == torch.bool and r["traj_ids"].dtype == torch.int64

    # Next batch: env 0 starts a new episode at the edge (is_init at t=0, after the terminal);
    # env 1 continues its episode across the batch boundary and is truncated at the end.
    b2 = make_batch(
        obs=[[30, 31], [24, 25]],
        next_obs=[[31, 32], [25, 26]],
        is_init=[[1, 0], [0, 0]],
        reward=[[1, 1], [1, 1]],
        terminated=[[0, 0], [0, 0]],
        truncated=[[0, 0], [0, 1]],
    )
    r2 = layout(b2)
    assert r2["observation"].squeeze(-1).tolist() == [30, 31, 32, 25, 26]
    assert r2["traj_ids"].tolist() == [3, 3, 3, 2, 2]  # env 1 keeps its id across batches
    assert r2["is_last"].squeeze(-1).tolist() == [0, 0, 0, 0, 1]
    assert r2["is_terminal"].squeeze(-1).tolist() == [0, 0, 0, 0, 0]  # truncation is not terminal
    assert layout.state_dict() == {"next_traj_id": 4}


def test_flat_single_env_batch_and_resume_keeps_ids_unique():
    layout = DreamerRecordLayout(num_envs=1)
    b = make_batch([[0, 1]], [[1, 2]], [[1, 0]], [[0, 0]], [[0, 0]], [[0, 0]])[0]  # [T]
    r = layout(b)
    assert r["observation"].squeeze(-1).tolist() == [0, 1, 2]
    resumed = DreamerRecordLayout(num_envs=1)
    resumed.load_state_dict(layout.state_dict())
    r = resumed(make_batch([[5]], [[6]], [[1]], [[0]], [[0]], [[0]]))
    assert r["traj_ids"].tolist() == [1, 1]


def test_errors_name_the_problem():
    layout = DreamerRecordLayout(num_envs=2)
    b = make_batch([[0, 1]], [[1, 2]], [[1, 0]], [[0, 0]], [[0, 0]], [[0, 0]])
    with pytest.raises(ValueError, match="num_envs=2"):
        layout(b)
    layout = DreamerRecordLayout(num_envs=1)
    with pytest.raises(ValueError, match="is_init is False"):
        layout(make_batch([[0, 1]], [[1, 2]], [[0, 0]], [[0, 0]], [[0, 0]], [[0, 0]]))
    with pytest.raises(KeyError, match="is_init"):
        layout(b[:1].exclude("is_init"))
    with pytest.raises(ValueError, match="num_envs"):
        DreamerRecordLayout(num_envs=0)


def test_a_batch_that_skips_steps_is_refused_naming_the_env():
    """One worker's batch (env 1 of 2) whose episode jumps ahead: steps were lost in between."""
    layout = DreamerRecordLayout(num_envs=2)
    layout(make_batch([[0, 1], [20, 21]], [[1, 2], [21, 22]], [[1, 0], [1, 0]], [[0, 0]] * 2, [[0, 0]] * 2,
                      [[0, 0]] * 2))
    layout(make_batch([[2, 3]], [[3, 4]], [[0, 0]], [[0, 0]], [[0, 0]], [[0, 0]]), first_env=0)  # continues
    with pytest.raises(ValueError, match=r"^collector batch for envs \[1\] does not start where"):
        layout(make_batch([[25, 26]], [[26, 27]], [[0, 0]], [[0, 0]], [[0, 0]], [[0, 0]]), first_env=1)
    # the refused batch changed nothing: env 1 still continues from its frame 22 ...
    r = layout(make_batch([[22, 23]], [[23, 24]], [[0, 0]], [[0, 0]], [[0, 0]], [[0, 0]]), first_env=1)
    assert r["observation"].squeeze(-1).tolist() == [23, 24] and r["traj_ids"].tolist() == [1, 1]
    # ... and a new episode may start anywhere
    layout(make_batch([[40, 41]], [[41, 42]], [[1, 0]], [[0, 0]], [[0, 0]], [[0, 0]]), first_env=1)


def test_finished_episodes():
    b = make_batch([[0, 1]], [[1, 2]], [[1, 0]], [[0, 0]], [[0, 1]], [[0, 0]])
    b["next", "episode_reward"][0, 1] = 7.0
    b["next", "step_count"][0, 1] = 2
    returns, lengths = finished_episodes(b)
    assert returns.tolist() == [7.0] and lengths.tolist() == [2.0]


def test_layout_on_real_collector_output():
    from torchrl.collectors import Collector

    from imwm.envs import make_gym_env

    env = make_gym_env("CartPole-v1", num_envs=2, seed=0)
    collector = Collector(env, None, frames_per_batch=40, total_frames=80)
    layout = DreamerRecordLayout(num_envs=2)
    ids_seen = []
    for batch in collector:
        r = layout(batch)
        n_init = int(batch["is_init"].sum())
        assert r.shape[0] == 40 + n_init
        # Within one traj id the records are consecutive and start with is_first only when the
        # episode started in this batch; an id never appears for two envs.
        ids_seen.append(r["traj_ids"])
        first = r["is_first"].squeeze(-1)
        assert int(first.sum()) == n_init
        ids = r["traj_ids"]
        starts_new_run = torch.cat([torch.tensor([True]), ids[1:] != ids[:-1]])
        # Every episode start begins a new run of ids; every id is one contiguous run.
        assert starts_new_run[first].all()
        assert int(starts_new_run.sum()) == ids.unique().numel()
        # Record after is_last belongs to another episode.
        last = r["is_last"].squeeze(-1)[:-1]
        assert (ids[1:][last] != ids[:-1][last]).all()
    collector.shutdown()
    ids = torch.cat(ids_seen)
    assert ids.unique().numel() == layout.next_traj_id


@pytest.mark.parametrize("key", [("next", "reward"), ("next", "observation"), "observation", "action"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_value_is_refused_naming_key_and_env(key, bad):
    from imwm.errors import UserError, format_user_error  # noqa: PLC0415
    from imwm.training.layout import NonFiniteRecordError  # noqa: PLC0415

    layout = DreamerRecordLayout(num_envs=2)
    batch = make_batch(obs=[[0, 1], [5, 6]], next_obs=[[1, 2], [6, 7]], is_init=[[1, 0], [1, 0]],
                       reward=[[0, 1], [0, 1]], terminated=[[0, 0], [0, 0]], truncated=[[0, 0], [0, 0]])
    batch.get(key)[1, 1].view(-1)[0] = bad
    with pytest.raises(NonFiniteRecordError) as err:
        layout(batch)
    assert isinstance(err.value, UserError)
    line = format_user_error(err.value)
    assert "\n" not in line and f"env 1 returned a NaN or infinity in {key!r}" in line
    assert layout.next_traj_id == 0  # nothing converted: the batch left no trace
    batch.get(key)[1, 1].view(-1)[0] = 0.0
    assert layout(batch)["traj_ids"].tolist() == [0, 0, 0, 1, 1, 1]
