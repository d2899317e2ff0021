"""End-to-end smoke runs of the benchmark scripts through their real entry points, tiny sizes.

Each test runs ``scripts/bench_*.py`` as a subprocess (cwd a temporary folder, one thread, no
wandb, no progress bars), then parses the markdown table it prints: every expected row and column
is there, the numbers are finite and positive, the ratios agree with the columns they are computed
from, and the files named by ``--out``/``--figure`` exist with the printed content.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest

from script_runner import load_script  # noqa: E402  (tests dir is on sys.path)
from script_runner import run_script as bench  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (f"rc {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                                  f"stderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


def table(text: str, first_header: str) -> tuple[list[str], list[dict[str, str]]]:
    """The markdown table whose header row starts with ``first_header``: (header, rows as dicts)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |")]
    assert len(starts) == 1, f"expected one table starting with {first_header!r}, found {len(starts)} in:\n{text}"
    i = starts[0]
    header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
    separator = lines[i + 1].replace("|", "").replace("-", "").replace(":", "").strip()
    assert separator == "" and lines[i + 1].count("|") == len(header) + 1, lines[i + 1]
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(header), f"row has {len(cells)} cells, header {len(header)}: {line}"
        rows.append(dict(zip(header, cells)))
    assert rows, f"table {first_header!r} has no rows"
    return header, rows


def num(cell: str) -> float:
    """A printed number (``1,234``, ``0.82x``, ``12.5``), which must be finite."""
    value = float(cell.replace(",", "").removesuffix("x").strip())
    assert math.isfinite(value), cell
    return value


def keyed(rows: list[dict[str, str]], column: str) -> dict[str, dict[str, str]]:
    out = {r[column]: r for r in rows}
    assert len(out) == len(rows), f"duplicate rows in {rows}"
    return out


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- bench_update.py
def test_bench_update_times_imwm_rssm_vta_and_torchrl(tmp_path):
    proc = bench(tmp_path, "bench_update.py", "--size", "XS", "--batch", "2", "--length", "4", "--horizon", "2",
                 "--actions", "3", "--repeats", "2", "--warmup", "1", "--threads", "1", "--dynamics", "rssm", "vta",
                 "vta:boundary_grad=local,boundary_force_scale=0")
    out = ok(proc)
    header, rows = table(out, "implementation")
    assert header == ["implementation", "median ms", "min ms", "max ms", "ratio vs torchrl"]
    rows = keyed(rows, "implementation")
    assert list(rows) == ["imwm (rssm)", "imwm (vta)", "imwm (vta:boundary_grad=local,boundary_force_scale=0)",
                          "torchrl 0.14.1"]
    base = num(rows["torchrl 0.14.1"]["median ms"])
    for name, row in rows.items():
        med, lo, hi = num(row["median ms"]), num(row["min ms"]), num(row["max ms"])
        assert 0 < lo <= med <= hi, row
        assert row["ratio vs torchrl"].endswith("x"), row
        ratio = num(row["ratio vs torchrl"])
        # the ms cells are rounded to whole ms, the ratio is computed before rounding
        tol = 0.011 + 0.5 * (1 + med / base) / base  # +-0.5 ms on both cells, +-0.005 on the ratio
        assert ratio > 0 and ratio == pytest.approx(med / base, abs=tol), (name, row)
    assert rows["torchrl 0.14.1"]["ratio vs torchrl"] == "1.00x"
    assert "size XS, batch 2x4" in out and "3 actions, imagination 2 steps from 8 states" in out
    assert "2 timed repeats after 1 warm-up" in out
    for name in rows:
        assert f"warmed up {name}" in proc.stderr
    assert "repeat 2/2" in proc.stderr
    # the script re-executes itself with the glibc malloc tunables (as the Makefile sets them) and shows them
    command = [line for line in out.splitlines() if line.startswith("command: ")]
    assert len(command) == 1 and "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=" in command[0], command
    assert command[0].endswith("--dynamics rssm vta vta:boundary_grad=local,boundary_force_scale=0")
    assert "--no-reexec" not in command[0]


def test_bench_update_without_torchrl_has_no_ratio_and_bad_sizes_fail(tmp_path):
    # the catch preset's pixel model; --no-torchrl (TorchRL has no catch-sized model either)
    out = ok(bench(tmp_path, "bench_update.py", "--size", "catch", "--batch", "1", "--length", "3", "--horizon",
                   "1", "--actions", "3", "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-torchrl"))
    _, rows = table(out, "implementation")
    assert [r["implementation"] for r in rows] == ["imwm (rssm)"]  # --dynamics defaults to rssm
    assert rows[0]["ratio vs torchrl"] == "-" and num(rows[0]["median ms"]) > 0
    assert "size catch, batch 1x3, 64x64x3 uint8 frames" in out

    bad = bench(tmp_path, "bench_update.py", "--batch", "0")
    assert bad.returncode != 0 and "--batch must be >= 1, got 0" in bad.stderr
    bad = bench(tmp_path, "bench_update.py", "--device", "gpu")
    assert bad.returncode == 2 and "--device: must be cpu, cuda, cuda:N or mps" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bench_update_precisions_pair_each_with_torchrl_at_the_same_precision(tmp_path):
    out = ok(bench(tmp_path, "bench_update.py", "--size", "XS", "--batch", "1", "--length", "3", "--horizon", "1",
                   "--actions", "2", "--repeats", "1", "--warmup", "0", "--threads", "1",
                   "--precision", "float32", "bfloat16"))
    header, rows = table(out, "implementation")
    assert header[-2:] == ["ratio vs torchrl", "ratio vs torchrl float32"]
    rows = keyed(rows, "implementation")
    assert list(rows) == ["imwm (rssm, float32)", "torchrl 0.14.1 (float32)", "imwm (rssm, bfloat16)",
                          "torchrl 0.14.1 (bfloat16)"]
    assert rows["torchrl 0.14.1 (bfloat16)"]["ratio vs torchrl"] == "1.00x"
    assert rows["torchrl 0.14.1 (float32)"]["ratio vs torchrl float32"] == "1.00x"
    half = num(rows["imwm (rssm, bfloat16)"]["median ms"])
    for column, base in (("ratio vs torchrl", "torchrl 0.14.1 (bfloat16)"),
                         ("ratio vs torchrl float32", "torchrl 0.14.1 (float32)")):
        expected = half / num(rows[base]["median ms"])
        assert num(rows["imwm (rssm, bfloat16)"][column]) == pytest.approx(expected, rel=0.05, abs=0.02), column


def test_update_flops_counts_matmuls_forward_and_backward_by_hand():
    bench_update = load_script("bench_update")
    import torch

    layer = torch.nn.Linear(3, 5)
    x = torch.randn(4, 3)  # no gradient to the input: the backward is the weight's matmul only

    def step():
        layer(x).sum().backward()

    # forward addmm 2*4*3*5 = 120, weight gradient mm 2*5*4*3 = 120; the elementwise ops cost nothing here
    assert bench_update.update_flops(step) == 240
    x.requires_grad_(True)  # now the input's gradient too: another 2*4*5*3
    assert bench_update.update_flops(step) == 360
    assert bench_update.gemm_rate("cpu", repeats=2) > 1e8  # any CPU multiplies faster than 0.1 GFLOP/s
    # a compiled row's FLOPs are read from the row of the same update run eagerly
    assert bench_update.eager_twin("imwm (rssm, compile=max-autotune, scope=step)") == "imwm (rssm, compile=false)"
    assert bench_update.eager_twin("imwm (vta:boundary_grad=local, compile=default, bfloat16)") \
        == "imwm (vta:boundary_grad=local, compile=false, bfloat16)"


def test_bench_update_count_flops_adds_the_floor_against_torchrl(tmp_path):
    out = ok(bench(tmp_path, "bench_update.py", "--size", "XS", "--batch", "1", "--length", "3", "--horizon", "1",
                   "--actions", "2", "--repeats", "1", "--warmup", "0", "--threads", "1", "--count-flops"))
    header, rows = table(out, "implementation")
    assert header[-4:] == ["GFLOP", "GFLOP/s", "floor ms", "floor vs torchrl"]
    rows = keyed(rows, "implementation")
    assert list(rows) == ["imwm (rssm)", "torchrl 0.14.1"]
    torchrl_ms = num(rows["torchrl 0.14.1"]["median ms"])
    for row in rows.values():
        gflop, floor_ms = num(row["GFLOP"]), num(row["floor ms"])
        assert gflop > 0 and num(row["GFLOP/s"]) > 0
        assert num(row["floor vs torchrl"]) == pytest.approx(floor_ms / torchrl_ms, abs=0.01 + 0.05 / torchrl_ms)
    assert "large-GEMM rate" in out and "GFLOP/s ([4096, 1536] x [1536, 512], float32, 1 threads)" in out


# ----------------------------------------------------------------------------- bench_env.py
def test_bench_env_rows_for_raw_vector_and_gym_backends(tmp_path):
    out = ok(bench(tmp_path, "bench_env.py", "--game", "pong", "--steps", "64", "--repeats", "1",
                   "--num-envs", "1", "2"))
    header, rows = table(out, "pipeline")
    assert header == ["pipeline", "env steps/s (median)", "min", "max", "vs raw"]
    names = [r["pipeline"] for r in rows]
    assert names == ["raw gymnasium (1 env, 210x160, no resize)",
                     "imwm vector backend, Collector (1 env, 64x64)",
                     "imwm vector backend, Collector (2 envs, 64x64)",
                     "imwm gym backend, Collector (1 env, GymEnv + resize 64x64)"]
    raw = num(rows[0]["env steps/s (median)"])
    for row in rows:
        med, lo, hi = num(row["env steps/s (median)"]), num(row["min"]), num(row["max"])
        assert 0 < lo <= med <= hi, row
        # steps/s are printed as whole numbers; ALE on one core does well under 1e6 steps/s
        assert med < 1e6, row
        assert num(row["vs raw"]) == pytest.approx(med / raw, abs=0.011 + 0.5 * (1 + med / raw) / raw), row
    assert rows[0]["vs raw"] == "1.00x"
    assert "game ALE/Pong-v5, 64 steps x 1 repeats" in out and "OMP_NUM_THREADS=1" in out
    assert "`python scripts/bench_env.py --game pong --steps 64 --repeats 1 --num-envs 1 2`" in out


def test_bench_env_unknown_game_is_refused(tmp_path):
    bad = bench(tmp_path, "bench_env.py", "--game", "pongg", "--steps", "8", "--repeats", "1")
    assert bad.returncode != 0 and "unknown Atari task 'pongg'" in bad.stderr


# ----------------------------------------------------------------------------- bench_replay.py
def test_bench_replay_all_samplers_at_two_capacities(tmp_path):
    proc = bench(tmp_path, "bench_replay.py", "--capacities", "2000", "20000", "--batch", "4", "--length", "8",
                 "--rounds", "2", "--block", "4")
    out = ok(proc)
    header, rows = table(out, "capacity")
    methods = ["curious", "uniform", "torchrl", "naive"]
    assert header == ["capacity", *(f"{m} (us)" for m in methods), "curious growth", "log N growth",
                      "curious / torchrl", "curious / uniform"]
    rows = keyed(rows, "capacity")
    assert list(rows) == ["2e+03", "2e+04"]
    first = rows["2e+03"]
    for cap, row in rows.items():
        us = {m: num(row[f"{m} (us)"]) for m in methods}
        assert all(v > 0 for v in us.values()), row
        # ratios are computed before the us cells are rounded to whole microseconds
        assert num(row["curious / torchrl"]) == pytest.approx(us["curious"] / us["torchrl"], rel=0.02, abs=0.011)
        assert num(row["curious / uniform"]) == pytest.approx(us["curious"] / us["uniform"], rel=0.02, abs=0.011)
        growth = us["curious"] / num(first["curious (us)"])
        assert num(row["curious growth"]) == pytest.approx(growth, rel=0.02, abs=0.011), row
    assert first["curious growth"] == "1.00x" and first["log N growth"] == "1.00x"
    assert num(rows["2e+04"]["log N growth"]) == pytest.approx(math.log(20000) / math.log(2000), abs=0.006)
    assert "sample 4 slices of 8" in out and "sum-tree arity 32" in out
    assert "# capacity 2e+03 done" in proc.stderr and "# capacity 2e+04 done" in proc.stderr
    assert "--capacities 2000 20000" in out.splitlines()[-1] and out.splitlines()[-1].startswith("command: ")


def test_bench_replay_method_subset_drops_columns(tmp_path):
    out = ok(bench(tmp_path, "bench_replay.py", "--capacities", "3000", "--batch", "2", "--length", "4",
                   "--rounds", "1", "--block", "2", "--methods", "curious", "uniform", "--clock", "process"))
    header, rows = table(out, "capacity")
    assert header == ["capacity", "curious (us)", "uniform (us)", "curious growth", "log N growth",
                      "curious / torchrl", "curious / uniform"]
    (row,) = rows
    assert row["capacity"] == "3e+03" and row["curious / torchrl"] == "-"
    assert num(row["curious / uniform"]) > 0 and "(process clock)" in out


# ----------------------------------------------------------------------------- bench_learning.py
def test_bench_learning_two_seeds_two_at_a_time(tmp_path):
    out_dir = tmp_path / "bl"
    out = ok(bench(tmp_path, "bench_learning.py", "--out", str(out_dir), "--config", "debug",
                   "preset=debug total_env_steps=180 eval_every=60 eval_sample=true", "--seeds", "0", "1",
                   "--jobs", "2", "--random-episodes", "3", "--solve", "1"))
    greedy, sampled = out.split("Sampled actions (`eval/return_sample`")
    header, rows = table(greedy, "configuration")
    assert header[:4] == ["configuration", "seeds", "final return (mean ± std)", "per seed"]
    rows = keyed(rows, "configuration")
    assert set(rows) == {"debug", "uniform-random policy"}
    assert rows["debug"]["seeds"] == "2"
    finals = [float(v) for v in rows["debug"]["per seed"].split(", ")]
    mean = float(rows["debug"]["final return (mean ± std)"].split(" ± ")[0])
    assert mean == pytest.approx(sum(finals) / 2, abs=0.06)
    # every CartPole episode lasts >= 8 steps at reward 1: solved at threshold 1 on the 1st eval
    assert all(part.startswith("60 / ") for part in rows["debug"][header[4]].split(", "))
    assert 8 <= float(rows["uniform-random policy"]["final return (mean ± std)"]) <= 100
    assert (out_dir / "learning.md").read_text().strip() in out
    assert is_png(out_dir / "learning_curves.png")
    # eval_sample=true: every evaluation also plays sampled actions, tabulated after the greedy table
    _, rows_sampled = table(sampled, "configuration")
    assert keyed(rows_sampled, "configuration")["debug"]["seeds"] == "2"
    for seed in (0, 1):
        metrics = list(csv.DictReader(open(out_dir / f"debug-s{seed}" / "metrics.csv")))
        evals = [r for r in metrics if r.get("eval/return")]
        assert len(evals) >= 3 and all(float(r["eval/return_sample"]) >= 8 for r in evals)
    for seed in (0, 1):
        run = out_dir / f"debug-s{seed}"
        assert (run / "checkpoints" / "latest.pt").is_file()
        assert f"seed: {seed}" in (run / "config.yaml").read_text()
    # --reuse keeps finished runs: nothing is trained again, the table is the same
    stamp = (out_dir / "debug-s0" / "checkpoints" / "latest.pt").stat().st_mtime_ns
    again = ok(bench(tmp_path, "bench_learning.py", "--out", str(out_dir), "--config", "debug",
                     "preset=debug total_env_steps=180 eval_every=60", "--seeds", "0", "1", "--reuse",
                     "--random-episodes", "3", "--solve", "1"))
    assert (out_dir / "debug-s0" / "checkpoints" / "latest.pt").stat().st_mtime_ns == stamp
    _, rows_again = table(again.split("Sampled actions")[0], "configuration")
    assert keyed(rows_again, "configuration")["debug"]["per seed"] == rows["debug"]["per seed"]


def test_bench_learning_atari_pong_tiny_run(tmp_path):
    tiny = " ".join(["preset=atari", "env.task=pong", "env.full_action_space=false", "total_env_steps=64",
                     "prefill=32", "model.deter=32", "model.hidden=32", "model.cnn_depth=4", "model.mlp_units=32",
                     "model.stoch=4", "model.classes=4", "replay.batch_size=2", "replay.batch_length=8",
                     "replay.capacity=1000", "train_ratio=8", "frames_per_batch=16", "eval_every=32",
                     "eval_episodes=1", "eval_max_steps=20"])
    out_dir = tmp_path / "bl"
    out = ok(bench(tmp_path, "bench_learning.py", "--suite", "atari", "--config", "tiny", tiny, "--seeds", "0",
                   "--out", str(out_dir), "--random-episodes", "1"))
    _, rows = table(out, "configuration")
    rows = keyed(rows, "configuration")
    assert -21 <= float(rows["tiny"]["final return (mean ± std)"].split(" ± ")[0]) <= 21
    # a uniform random policy loses a full game of Pong (-21 .. 21) heavily
    assert -21 <= float(rows["uniform-random policy"]["final return (mean ± std)"]) <= -10
    config = (out_dir / "tiny-s0" / "config.yaml").read_text()
    assert "task: pong" in config and "deter: 32" in config


def test_bench_learning_refuses_zero_random_episodes(tmp_path):
    bad = bench(tmp_path, "bench_learning.py", "--out", str(tmp_path / "bl"), "--random-episodes", "0")
    assert bad.returncode != 0 and "--random-episodes and --jobs must be >= 1" in bad.stderr


def test_bench_learning_solved_needs_two_more_evals_and_stops_the_clock_at_the_third():
    mod = load_script("bench_learning")
    curve = [(250, 480.0, 1.0), (500, 300.0, 2.0), (750, 500.0, 3.0), (1000, 476.0, 4.0),
             (1250, 490.0, 5.0)]
    assert mod.solved_at(curve, 475.0) == (750, 5.0)  # 250 alone was not held
    assert mod.solved_at(curve[:4], 475.0) is None     # held only once more
    assert mod.solved_at(curve, None) is None


# ----------------------------------------------------------------------------- bench_intrinsic.py
EFFECT_HEADER = ["intrinsic", "coverage @25%", "coverage @50%", "coverage @100%", "furthest cell",
                 "furthest per episode, last 25%", "seeds with a reward", "first reward (env step)",
                 "goal episodes after prefill", "greedy return", "min/run"]
# env steps a multiple of the 16 frames per batch: the runs stop exactly at the budget
CHAIN, ENV_STEPS, PREFILL = 6, 48, 16
TINY_INTRINSIC = ["--chain", str(CHAIN), "--env-steps", str(ENV_STEPS), "--prefill", str(PREFILL), "--batch", "2",
                  "--length", "8", "--train-ratio", "8", "--seeds", "0"]


def check_effect(out: str, tmp_path: Path, methods: list[str]) -> None:
    assert "FAILED" not in out and "failed" not in out
    assert f"effect runs: {len(methods)} methods x 1 seeds" in out
    for m in methods:
        assert f"done {m} seed 0: coverage" in out
    header, rows = table(out, "intrinsic")
    assert header == EFFECT_HEADER
    rows = keyed(rows, "intrinsic")
    assert list(rows) == ["uniform random policy", *methods]
    for name, row in rows.items():
        cov = [num(row[f"coverage @{p}%"]) for p in (25, 50, 100)]
        assert all(0 < c <= 1 for c in cov) and cov == sorted(cov), row
        furthest = num(row["furthest cell"])
        assert 0 <= num(row["furthest per episode, last 25%"]) <= furthest <= CHAIN - 1, row
        # every episode starts at cell 0 and moves one cell a step: the cells seen are 0..furthest
        assert cov[2] == pytest.approx((furthest + 1) / CHAIN, abs=0.006), row
        rewarded = furthest == CHAIN - 1  # the only reward is at the far end
        assert row["seeds with a reward"] == ("1/1" if rewarded else "0/1"), row
        if rewarded:
            assert 1 <= num(row["first reward (env step)"]) <= ENV_STEPS, row
        else:
            assert row["first reward (env step)"] == "never" and num(row["goal episodes after prefill"]) == 0, row
        if name == "uniform random policy":
            assert row["greedy return"] == "-" and row["min/run"] == "-"
        else:
            assert num(row["greedy return"]) in (0.0, 1.0), row  # one greedy episode: reward 1 at the goal or 0
            assert num(row["min/run"]) >= 0, row
    results = json.loads((tmp_path / "w" / "effect.json").read_text())
    assert sorted(r["method"] for r in results) == sorted([*methods, "random"])
    for r in results:
        assert not r.get("failed"), r
        assert len(r["curve"]) == 50 and r["curve"] == sorted(r["curve"]) and r["curve"][-1] == r["coverage@1"]
        assert 0.0 <= r["late_at_start"] <= 1.0, r
        assert r["late_right_at_start"] is None or 0.0 <= r["late_right_at_start"] <= 1.0, r
        if r["method"] != "random":
            # 0.5 updates per env step after the prefill (train_ratio 8 at batch 2x8)
            assert r["env_steps"] == ENV_STEPS and r["updates"] == (ENV_STEPS - PREFILL) // 2, r
            assert (tmp_path / "w" / f"{r['method']}-s0" / "metrics.csv").is_file()
    for m in methods:
        if m != "none":
            assert f"Final `{m}` statistics (mean over seeds): " in out
    assert "Seeds that reached the goal, Fisher's exact test against none (two-sided): " in out
    assert is_png(tmp_path / "c.png")


def check_overhead(out: str, methods: list[str]) -> None:
    header, rows = table(out, "variant")
    assert header == ["variant", "ms / update", "ratio"]
    rows = keyed(rows, "variant")
    dormant = ["dormant off", "dormant every update (maybe_measure)", "dormant every update (hooks on the update)"]
    assert list(rows) == [*(f"intrinsic={m}" for m in methods), *dormant]
    ms = {k: num(r["ms / update"]) for k, r in rows.items()}
    assert all(v > 0 for v in ms.values()), ms
    for k, r in rows.items():
        base, suffix = ("dormant off", " vs off") if k.startswith("dormant") else ("intrinsic=none", " vs none")
        assert r["ratio"].endswith("x" + suffix), r
        ratio = num(r["ratio"].removesuffix(suffix))
        tol = 0.011 + 0.05 * (1 + ms[k] / ms[base]) / ms[base]  # ms cells rounded to 0.1
        assert ratio == pytest.approx(ms[k] / ms[base], abs=tol), r
    assert rows["intrinsic=none"]["ratio"] == "1.00x vs none" and rows["dormant off"]["ratio"] == "1.00x vs off"
    assert "batch 2x8" in out and f"vector [{CHAIN}] observations" in out


def test_bench_intrinsic_effect_two_methods(tmp_path):
    methods = ["none", "disagreement"]
    out = ok(bench(tmp_path, "bench_intrinsic.py", "--methods", *methods, *TINY_INTRINSIC, "--jobs", "2",
                   "--skip-overhead", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "r.md"),
                   "--figure", str(tmp_path / "c.png")))
    check_effect(out, tmp_path, methods)
    assert "| variant |" not in out
    report = (tmp_path / "r.md").read_text()
    assert report.strip() in out and report.startswith("Effect on `imwm/SparseChain-v0` (6 cells, 12 steps")
    assert "Command: `python scripts/bench_intrinsic.py --methods none disagreement" in report


def test_bench_intrinsic_overhead_all_methods(tmp_path):
    methods = ["none", "adaptive", "lexa_style", "disagreement"]
    out = ok(bench(tmp_path, "bench_intrinsic.py", "--methods", *methods, "--chain", str(CHAIN), "--batch", "2",
                   "--length", "8", "--repeats", "1", "--warmup", "1", "--skip-effect",
                   "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "r.md")))
    check_overhead(out, methods)
    assert "Effect on" not in out and not (tmp_path / "w" / "effect.json").exists()
    assert (tmp_path / "r.md").read_text().strip() in out


@pytest.mark.slow
def test_bench_intrinsic_full_four_methods(tmp_path):
    """The whole benchmark (effect and overhead) for all four methods: ~1-2 min on a loaded 2-core CPU."""
    methods = ["none", "adaptive", "lexa_style", "disagreement"]
    out = ok(bench(tmp_path, "bench_intrinsic.py", "--methods", *methods, *TINY_INTRINSIC, "--jobs", "1",
                   "--repeats", "1", "--warmup", "1", "--workdir", str(tmp_path / "w"),
                   "--out", str(tmp_path / "r.md"), "--figure", str(tmp_path / "c.png")))
    check_effect(out, tmp_path, methods)
    check_overhead(out, methods)
    assert (tmp_path / "r.md").read_text().strip() in out


# ----------------------------------------------------------------------------- bench_collector.py
def test_bench_collector_runs_sync_and_async_side_by_side(tmp_path):
    out = ok(bench(tmp_path, "bench_collector.py", "--overrides", "preset=debug", "total_env_steps=140",
                   "prefill=100"))
    header, rows = table(out, "collector")
    assert header[:5] == ["collector", "wall s", "s per 10k env steps", "env steps", "updates"]
    rows = keyed(rows, "collector")
    assert list(rows) == ["sync", "async"]
    for row in rows.values():
        assert num(row["env steps"]) == 140 and num(row["updates"]) == 20  # the same train ratio
        for share in ("waiting for data", "learner busy", "pushing weights"):
            assert 0 <= num(row[share].rstrip("%")) <= 100
    assert num(rows["sync"]["pushing weights"].rstrip("%")) == 0  # its policy acts in this process


# ----------------------------------------------------------------------------- bench_update_history.py
def test_bench_update_history_times_each_variant_in_its_own_worktree(tmp_path):
    out = ok(bench(tmp_path, "bench_update_history.py", "--variants", "HEAD:agent.compile=false",
                   "HEAD:agent.compile=false,agent=default", "--threads", "1", "--repeats", "2", "--warmup", "1"))
    header, rows = table(out, "variant")
    assert header == ["variant", "commit", "threads", "median ms", "min ms", "CPU ms", "warm-up s",
                      "speed-up vs first row"]
    assert [r["variant"] for r in rows] == ["`HEAD:agent.compile=false`", "`HEAD:agent.compile=false,agent=default`"]
    base = num(rows[0]["median ms"])
    for r in rows:
        assert 0 < num(r["min ms"]) <= num(r["median ms"]) and num(r["CPU ms"]) > 0
        assert num(r["speed-up vs first row"]) == pytest.approx(base / num(r["median ms"]), abs=0.01)
    assert rows[0]["speed-up vs first row"] == "1.00x"
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=Path(__file__).parents[1], capture_output=True,
                               text=True).stdout
    assert "imwm_hist_" not in worktrees  # every temporary checkout is removed again


def test_bench_update_history_names_a_missing_commit_in_one_line(tmp_path):
    proc = bench(tmp_path, "bench_update_history.py", "--variants", "no-such-commit")
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        f"bench_update_history.py: --variants names 'no-such-commit', which is no commit of "
        f"{Path(__file__).resolve().parents[1]}"]
