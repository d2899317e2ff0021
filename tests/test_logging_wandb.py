"""A real offline wandb run through RunLogger: the run's config, tags and group, and a logged
video, read back from the run's ``.wandb`` transaction log.

wandb 0.31 has no Python reader for that file (it moved into wandb-core, and offline runs write
no ``files/config.yaml``), so :func:`read_wandb_records` reads the format itself: a LevelDB-style
log (header ``:W&B`` + magic 0xBEE1 + version, 32 KiB blocks of chunks ``crc32, length, type``)
of ``wandb_internal_pb2.Record`` protobufs.
"""
import glob
import json
import struct
import time

import numpy as np
import pytest
from PIL import Image

from imwm.configs import CONFIG_DIR
from imwm.errors import ConfigError
from imwm.training.logging import RunLogger, log_video_to_run

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path):
    """The ``Record`` protobufs of an offline run's ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), "not a wandb transaction log"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
    out = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


def finished_records(path, timeout=30.0):
    """The records of a finished run: wandb-core writes the file a moment after ``finish()``
    returns, so wait for its ``exit`` record."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_wandb_records(path)
            if records and records[-1].WhichOneof("record_type") == "exit":
                return records
        except Exception:  # noqa: BLE001 - a half-written chunk: read again
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout} s")
        time.sleep(0.2)


def offline_run(run_dir):
    """``(run record, config dict, history rows)`` of the single offline run under ``run_dir``."""
    files = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, files
    run, config, history = None, {}, []
    for record in finished_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                            for i in record.history.item})
    return run, config, history


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    # conftest disables wandb; this test wants a real offline run, kept inside tmp_path
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def _gif(path, n=3):
    frames = [Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def test_offline_run_holds_config_tags_group_metrics_and_video(wandb_offline):
    run_dir = wandb_offline / "run"
    config = {"seed": 3, "env": {"name": "cartpole", "task": "CartPole-v1"},
              "logger": {"backend": "wandb", "project": "imwm-test"}, "run_name": "cp-s3"}
    log = RunLogger(run_dir, backend="wandb", project="imwm-test", mode="offline", run_name="cp-s3",
                    total_env_steps=100, progress=False, config=config, group="cartpole-rssm",
                    tags=["debug", "ci"], notes="a test run", job_type="train")
    log.log({"train/loss": 1.5, "loss_kl": float("nan")}, 50)
    log.log({"eval/return": 9.0}, 50)
    assert log.log_video("eval/video", _gif(wandb_offline / "episode.gif"), 50)
    run_id = log.run_id
    log.close()

    run, saved, history = offline_run(run_dir)
    assert run.run_id == run_id and run.project == "imwm-test" and run.display_name == "cp-s3"
    assert run.run_group == "cartpole-rssm" and list(run.tags) == ["debug", "ci"]
    assert run.notes == "a test run" and run.job_type == "train"
    assert {k: saved[k] for k in config} == config  # the resolved config is the run's config
    logged = {k: v for row in history for k, v in row.items()}
    assert logged["train/loss"] == 1.5 and logged["eval/return"] == 9.0
    assert "loss_kl" not in logged  # non-finite values stay in metrics.csv only
    video = next(row for row in history if "eval/video/path" in row)
    assert video["eval/video/_type"] == "video-file" and video["eval/step"] == 50
    media = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "files" / video["eval/video/path"]))
    assert len(media) == 1 and media[0].endswith(".gif")
    # metrics.csv holds the same step once, whatever the backend
    assert (run_dir / "metrics.csv").read_text().splitlines()[1:] == ["50,9.0,nan,1.5"]


def test_log_video_to_a_finished_run(wandb_offline):
    """What ``scripts/evaluate.py --wandb`` does: continue the run's id, log the video and stats."""
    run_dir = wandb_offline / "run"
    config = {"seed": 0, "run_name": "r", "logger": {"backend": "csv", "project": "imwm-test", "mode": "offline",
                                                      "tags": ["eval"], "group": None}}
    run_id = log_video_to_run(run_dir, config, _gif(wandb_offline / "e.gif"), step=300, run_id="abc123",
                              metrics={"eval/return": 12.0})
    assert run_id == "abc123"
    run, saved, history = offline_run(run_dir)
    assert run.run_id == "abc123" and list(run.tags) == ["eval"] and saved["seed"] == 0
    row = next(row for row in history if "eval/video/path" in row)
    assert row["eval/return"] == 12.0 and row["eval/step"] == 300


def test_figures_logged_as_images_to_a_finished_run(wandb_offline):
    """What ``vta_boundary_viz.py --wandb`` does: the boundary figures become wandb images."""
    run_dir = wandb_offline / "run"
    config = {"seed": 0, "run_name": "r", "logger": {"backend": "wandb", "project": "imwm-test",
                                                      "mode": "offline"}}
    png = wandb_offline / "boundary_timeline.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(png)
    log_video_to_run(run_dir, config, None, step=40, images={"boundary/boundary_timeline": png})
    _, _, history = offline_run(run_dir)
    row = next(row for row in history if any(k.startswith("boundary/boundary_timeline") for k in row))
    kinds = {v for k, v in row.items() if k.endswith("_type")}
    assert kinds == {"image-file"}, row


def test_bad_logger_keys_fail_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"logger.tags: must be a list of non-empty strings"):
        RunLogger(tmp_path, backend="none", project="p", mode="offline", run_name="r",
                  total_env_steps=1, progress=False, tags=[1, 2])
    with pytest.raises(ConfigError, match=r"logger.group: must be a string or null"):
        RunLogger(tmp_path, backend="csv", project="p", mode="offline", run_name="r",
                  total_env_steps=1, progress=False, group=3)


@pytest.mark.parametrize("logger", ["wandb", "csv", "none"])
def test_logger_keys_are_config_keys(tmp_path, logger):
    """Every logger option has the wandb.init keys (null by default, offline wandb by default);
    they pass validation from the command line."""
    from hydra import compose, initialize_config_dir

    from imwm.training.config import validate_config
    from imwm.training.logging import WANDB_INIT_KEYS

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose("config", overrides=[f"logger={logger}", f"run_dir={tmp_path}"])
        given = compose("config", overrides=[f"logger={logger}", f"run_dir={tmp_path}", "logger.tags=[a,b]",
                                             "logger.group=g", "logger.entity=me", "logger.notes=n",
                                             "logger.job_type=train"])
    plain = validate_config(default)
    assert plain["logger"]["mode"] == "offline" and all(plain["logger"][k] is None for k in WANDB_INIT_KEYS)
    assert validate_config(given)["logger"]["tags"] == ["a", "b"]
