"""StreamWriter: trajectories kept contiguous per stream, streams freed and reused, state."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from imwm.replay import StreamWriter


def records(ids, last=None):
    ids = torch.tensor(ids)
    last = torch.zeros(len(ids), dtype=torch.bool) if last is None else torch.tensor(last)
    return TensorDict({"traj_ids": ids, "is_last": last.unsqueeze(-1)}, [len(ids)])


def test_runs_go_to_their_stream_and_wrap_inside_it():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(12), writer=StreamWriter(3))
    assert rb.extend(records([7, 7, 8, 8, 8, 9])).tolist() == [0, 1, 4, 5, 6, 8]
    # traj 8 continues in its ring (4..7) and wraps to its start, never into ring 2
    assert rb.extend(records([8, 8, 7])).tolist() == [7, 4, 2]
    assert rb.storage[torch.arange(4, 8)]["traj_ids"].tolist() == [8, 8, 8, 8]


def test_finished_streams_are_reused_then_least_recently_written():
    w = StreamWriter(2)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), writer=w)
    rb.extend(records([1, 1, 2, 2], last=[False, True, False, False]))  # traj 1 ended
    idx = rb.extend(records([3, 3])).tolist()
    assert idx == [2, 3]          # traj 3 took traj 1's free stream (ring 0)
    idx = rb.extend(records([4])).tolist()  # no free stream: evicts the least recent (2)
    assert idx == [6]
    assert w._open == [3, 4]


def test_writer_state_round_trips(tmp_path):
    w = StreamWriter(2)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), writer=w)
    rb.extend(records([1, 1, 2]))
    rb.dumps(tmp_path)
    w2 = StreamWriter(2)
    rb2 = TensorDictReplayBuffer(storage=LazyTensorStorage(8), writer=w2)
    rb2.loads(tmp_path)
    assert w2._stream_state() == w._stream_state()
    assert rb2.extend(records([2, 1])).tolist() == rb.extend(records([2, 1])).tolist()
    w3 = StreamWriter(2)
    w3.load_state_dict(w.state_dict())
    assert w3._stream_state() == w._stream_state()
    with pytest.raises(ValueError, match="num_streams=2"):
        StreamWriter(3).load_state_dict(w.state_dict())


def test_stream_writer_bad_input():
    with pytest.raises(ValueError, match="num_streams must be"):
        StreamWriter(0)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), writer=StreamWriter(2))
    with pytest.raises(KeyError, match="traj_ids"):
        rb.extend(TensorDict({"x": torch.zeros(3)}, [3]))
