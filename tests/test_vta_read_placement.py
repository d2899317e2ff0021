"""READ placement around true changes: offsets, steps since a change, a minimum-segment-length sweep,
the all-COPY surprise profile and its ceiling (hand-computed values), and the script on real run folders."""

import json

import numpy as np
import pytest
import torch

from imwm.analysis.boundary_truth import read_offsets
from imwm.analysis.read_placement import (NO_CHANGE_YET, copy_surprise_by_steps, detector_log_odds,
                                          mean_by_steps_since_change, min_seg_len_sweep, nearest_change_offsets,
                                          rate_matched_rows, read_offset_counts, reads_by_steps_since_change,
                                          spaced_top_k, steps_since_change, surprise_ceiling, threshold_reads)
from imwm.vta.sequence_model import VTASequenceModel

TRUE = np.array([[1, 0, 0, 1, 0, 0, 0, 1, 0, 0],
                 [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=bool)
PRED = np.array([[1, 0, 1, 0, 0, 1, 0, 0, 1, 1],    # 2: one before 3; 5: a tie between 3 and 7 -> +2 from 3
                 [1, 1, 0, 0, 0, 0, 0, 0, 1, 0]], dtype=bool)


def test_offsets_and_steps_since_change_by_hand():
    assert nearest_change_offsets(PRED, TRUE) == [-1, 2, 1, 2, 1, 8]
    assert read_offset_counts(PRED, TRUE) == {-1: 1, 1: 2, 2: 2, 8: 1}
    assert steps_since_change(TRUE).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 1, 2], list(range(10))]
    assert steps_since_change(np.array([0, 0, 1], dtype=bool)).tolist() == [[NO_CHANGE_YET, NO_CHANGE_YET, 0]]
    assert reads_by_steps_since_change(PRED, TRUE) == {1: 2, 2: 3, 8: 1}
    # a row without a change: its READs have no offset, and read_offsets calls them farther
    no_change = np.zeros((1, 4), bool)
    assert nearest_change_offsets(np.array([[0, 1, 0, 1]], bool), no_change) == [None, None]
    assert read_offsets(np.array([[0, 1, 0, 1]], bool), no_change)["farther"] == 2
    with pytest.raises(ValueError, match="same shape"):
        read_offset_counts(PRED[:, :5], TRUE)


def test_mean_by_steps_since_change_by_hand():
    values = np.arange(20, dtype=float).reshape(2, 10)
    means = mean_by_steps_since_change(values, TRUE, most=3)
    # since 0: steps 3, 7; 1: 1, 4, 8 and row 2's 11; 2: 2, 5, 9 and 12; 3: 6 and 13 (step 0 left out)
    assert means == {0: 5.0, 1: (1 + 4 + 8 + 11) / 4, 2: (2 + 5 + 9 + 12) / 4, 3: (6 + 13) / 2}
    assert np.isnan(mean_by_steps_since_change(values[:1], TRUE[:1], most=4)[4])
    with pytest.raises(ValueError, match="values and true"):
        mean_by_steps_since_change(values[:, :3], TRUE)


def _model():
    torch.manual_seed(0)
    return VTASequenceModel(image_size=16, cnn_depth=4, embed_dim=8, abs_belief_dim=8, obs_belief_dim=8,
                            abs_stoch_dim=2, obs_stoch_dim=2, hidden=8, boundary_hidden=8, boundary_surprise=True,
                            boundary_rate=0.5, max_seg_len=12)


def _data():
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 255, (6, 12, 3, 16, 16), dtype=torch.uint8, generator=g)
    truth = torch.zeros(6, 12, 1, dtype=torch.bool)
    truth[:, [0, 4, 9]] = True
    return {"observation": obs, "true_boundary": truth}


def test_min_seg_len_sweep_applies_each_limit_and_restores_the_model():
    from imwm.training.vta_run import predict_boundaries

    model, data = _model(), _data()
    model.dynamics.min_seg_len = 2
    rows = min_seg_len_sweep(model, data, [1, 3, 5], draws=5)
    assert model.dynamics.min_seg_len == 2 and [r["min_seg_len"] for r in rows] == [1, 3, 5]
    for r in rows:
        model.dynamics.min_seg_len = r["min_seg_len"]
        pred = predict_boundaries(model, data)["boundary"]
        assert r["reads"] == int(pred[:, 1:].sum())
        gaps = [np.diff(np.flatnonzero(row)) for row in pred.numpy()]
        assert all((g >= r["min_seg_len"]).all() for g in gaps)  # no segment shorter than the limit
        assert 0.0 <= r["f1"] <= 1.0 and r["ratio"] == pytest.approx(r["f1"] / r["random_f1"])
    with pytest.raises(ValueError, match="min_seg_len"):
        min_seg_len_sweep(model, data, [0])
    with pytest.raises(ValueError, match="dreamer variant"):
        min_seg_len_sweep(torch.nn.Linear(2, 2), data, [2])


def test_copy_surprise_is_the_detector_s_input_and_is_profiled_by_steps():
    model, data = _model(), _data()
    _, embed, action, is_first = model.inputs(data["observation"][:2])
    surprise = model.dynamics.copy_surprise(embed, action, is_first)
    assert surprise.shape == (2, 12, 1) and torch.isfinite(surprise).all() and (surprise >= 0).all()
    keep = (~is_first).float()
    # the same numbers the detector reads inside observe()
    assert torch.equal(surprise, model.dynamics._surprise(embed, action * keep, keep, model.dynamics.initial(2),
                                                          [True] + [False] * 11))
    profile = copy_surprise_by_steps(model, data, most=4, batch_size=4)
    assert list(profile) == [0, 1, 2, 3, 4] and all(np.isfinite(v) for v in profile.values())
    s = model.dynamics.copy_surprise(*model.inputs(data["observation"])[1:])[..., 0].numpy()
    assert profile[0] == pytest.approx(s[:, [4, 9]].mean(), rel=1e-5)


def test_spaced_top_k_takes_the_highest_steps_at_least_gap_apart_by_hand():
    score = [0.5, 0.9, 0.85, 0.1, 0.8, 0.2, 0.7]
    assert np.flatnonzero(spaced_top_k(score, 3, gap=1)).tolist() == [1, 2, 4]
    assert np.flatnonzero(spaced_top_k(score, 3, gap=2)).tolist() == [1, 4, 6]  # 0.85 and 0.5 sit next to 0.9
    assert np.flatnonzero(spaced_top_k(score, 3, gap=3)).tolist() == [1, 4]  # no third step is 3 from both
    assert not spaced_top_k(score, 0, gap=1).any()
    with pytest.raises(ValueError, match="gap"):
        spaced_top_k(score, 1, gap=0)
    with pytest.raises(ValueError, match=r"score must be \[T\]"):
        spaced_top_k(np.zeros((2, 3)), 1, gap=1)


def test_threshold_reads_keeps_the_minimum_segment_length_by_hand():
    score = np.array([[0, 5, 5, 5, 0, 5, 5],
                      [0, 0, 0, 0, 0, 0, 9]])
    assert threshold_reads(score, 4, gap=1).astype(int).tolist() == [[0, 1, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1]]
    assert threshold_reads(score, 4, gap=2).astype(int).tolist() == [[0, 0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1]]
    assert threshold_reads(score, 6, gap=2).astype(int).tolist() == [[0] * 7, [0, 0, 0, 0, 0, 0, 1]]
    with pytest.raises(ValueError, match="gap"):
        threshold_reads(score, 4, gap=0)


def test_rate_matched_rows_read_as_often_as_there_are_changes_by_hand():
    true = np.zeros((2, 10), dtype=bool)
    true[:, 0], true[0, [3, 7]], true[1, 5] = True, True, True  # three changes after step 0
    exact = np.where(true, 5.0, 0.0)
    exact[:, 0] = 9.0  # step 0 is not a READ the threshold places
    late = np.roll(exact, 1, axis=1)  # each change scored a step late (within the tolerance); step 1's 9 is blocked
    # the last steps highest, alike in both sequences: 3 READs is no threshold's count, the fewest above it is
    # 4 (steps 7 and 9 in each), which find one change of three (7): precision 1/4, recall 1/3, F1 2/7
    noise = np.tile(np.arange(10.0), (2, 1))
    rows = rate_matched_rows({"exact": exact, "late": late, "noise": noise}, true, gap=2, draws=5)
    assert [r["score"] for r in rows] == ["exact", "late", "noise"] and all(r["true"] == 3 for r in rows)
    assert [r["reads"] for r in rows] == [3, 3, 4]
    assert rows[0]["f1"] == 1.0 and rows[1]["f1"] == 1.0 and rows[2]["f1"] == pytest.approx(2 / 7)
    for r in rows:
        assert r["ratio"] == pytest.approx(r["f1"] / r["random_f1"])
    with pytest.raises(ValueError, match=r"noise and true must both be \[N, T\]"):
        rate_matched_rows({"noise": noise[:, :5]}, true, gap=2)


def test_detector_log_odds_are_the_detector_s_logits():
    model, data = _model(), _data()
    odds = detector_log_odds(model, data, batch_size=4)
    logits = model.dynamics.detector_logits(*model.inputs(data["observation"])[1:]).detach()
    assert odds.shape == (6, 12) and np.allclose(odds, (logits[..., 0] - logits[..., 1]).numpy(), atol=1e-6)


def test_surprise_ceiling_reads_at_the_true_count_of_the_most_surprising_steps():
    model, data = _model(), _data()
    rows = surprise_ceiling(model, data, [1, 3], draws=5, batch_size=4)
    assert [r["gap"] for r in rows] == [1, 3]
    assert rows[0]["reads"] == 6 * 2  # two changes after step 0 in each of the six sequences
    s = model.dynamics.copy_surprise(*model.inputs(data["observation"])[1:])[:, 1:, 0].numpy()
    pred = np.stack([spaced_top_k(row, 2, 3) for row in s])
    from imwm.analysis.boundary_truth import boundary_prf

    assert rows[1]["f1"] == pytest.approx(boundary_prf(pred, data["true_boundary"][:, 1:, 0].numpy())["f1"])
    for r in rows:
        assert 0.0 <= r["f1"] <= 1.0 and r["ratio"] == pytest.approx(r["f1"] / r["random_f1"])


def test_the_script_reads_both_variants_run_folders(tmp_path):
    from script_runner import run_script
    from test_vta_run import _cfg

    from imwm.training.vta_run import train

    dreamer = train(_cfg(tmp_path / "d", "vta=surprise", "vta.abs_belief_dim=16", "vta.obs_belief_dim=16",
                         "vta.abs_stoch_dim=4", "vta.obs_stoch_dim=4", "vta.hidden=16", "train.updates=2"))
    original = train(_cfg(tmp_path / "o", "vta=original", "vta.belief_dim=16", "vta.state_dim=4",
                          "vta.hidden_dim=16", "train.updates=2"))
    before = (dreamer / "checkpoints" / "latest.pt").read_bytes()
    out = run_script(tmp_path, "vta_read_placement.py", "--run", str(dreamer), str(original), "--min_seg_len", "2", "3",
                     "--most", "3", "--draws", "5", "--gap", "2", "--measures", "--out_json", str(tmp_path / "reads.json"))
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "reads.json").read_text())
    first, second = saved["runs"]
    assert first["trained_min_seg_len"] == 3 and [r["min_seg_len"] for r in first["min_seg_len"]] == [2, 3]
    assert list(first["copy_surprise"]) == ["0", "1", "2", "3"] and "min_seg_len" not in second
    assert [r["gap"] for r in first["surprise_ceiling"]] == [2] and "surprise ceiling, gap 2:" in out.stdout
    assert [r["measure"] for r in first["measures"]][:2] == ["kl", "shift"] and "measure pixels: AUC" in out.stdout
    assert [r["score"] for r in first["rate_matched"]] == ["detector", "surprise"]
    assert "detector at the true rate: one threshold" in out.stdout
    assert first["measures"][0]["ceiling"] == first["surprise_ceiling"]  # one pass: the model's own measure is the ceiling's
    assert "min_seg_len 3 (trained):" in out.stdout and "has no minimum segment length" in out.stdout
    assert "command: python scripts/vta_read_placement.py" in out.stdout
    assert (dreamer / "checkpoints" / "latest.pt").read_bytes() == before  # the run folder is only read


@pytest.mark.parametrize("module, prog", [("vta_read_placement", "imwm-vta-reads"),
                                          ("vta_detector_only", "imwm-vta-detector")])
def test_a_missing_run_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys, module, prog):
    import importlib

    cli = importlib.import_module(f"imwm.cli.{module}").cli
    monkeypatch.delenv("IMWM_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("sys.argv", [prog, "--run", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as exit_:
        cli()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and str(tmp_path / "nowhere") in err
