#!/usr/bin/env bash
# GPU check for a CUDA machine with a fresh checkout; at most ~8 minutes (340 s of sequential steps,
# then the compiled variants side by side for at most COMPILE_LIMIT=150 s).
#
#   bash scripts/gpu_check.sh                 # results in gpu_check.md (or: bash scripts/gpu_check.sh out.md)
#   PART=eager bash scripts/gpu_check.sh a.md; PART=compiled COMPILE_LIMIT=400 bash scripts/gpu_check.sh b.md
#
# Part "eager": 1. a venv with the CUDA build of the pinned torch (TORCH_CUDA picks the wheel index,
# default cu128) and imwm; 2. the CUDA-marked tests (agent, dynamics, samplers, transforms on the GPU);
# 3. bench_update.py --device cuda, eager, at size S and at 1M parameters, with kernel and host-sync
# counts; 4. a short preset=atari100k training run (updates/s). Part "compiled": default Inductor and
# CUDA graphs, with agent.compile_scope=step (the loop bodies compiled: a short compile) at 1M and
# size S, CUDA graphs with compile_scope=observe_step (the observe loop by step, imagination whole)
# at 1M and size S, and with compile_scope=phase (whole phases, loops unrolled: a cold compile of
# more than 420 s on one H200 machine) at 1M, one process each, started together: a cold compile is
# mostly single-threaded, so seven side by side take about as long as the longest, and a compile that
# outlasts COMPILE_LIMIT loses only its own row. A variant's timed updates may overlap another's
# compile (the results say so). PART=all (the default) runs both.
# Offline machines: when WHEELS (default .whl) holds wheels, made beforehand elsewhere by
# scripts/gpu_wheels.sh, setup installs nothing from the network: it keeps the machine's own python3
# (PYTHON) and its CUDA torch, whatever its version (the results file prints it), and installs the
# wheels into SITE (default /tmp/imwm-site), with the checkout on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.md}
PART=${PART:-all}
COMPILE_LIMIT=${COMPILE_LIMIT:-150}
TORCH_VERSION=$(sed -n 's/.*torch==\([0-9.]*\).*/\1/p' Makefile | head -1)
TORCH_CUDA=${TORCH_CUDA:-cu128}
VENV=${VENV:-.venv-gpu}
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
START=$(date +%s)

log() { printf '%s\n' "$@" | tee -a "$OUT"; }  # one line per argument
step() {  # step <title> <seconds> <command...>: runs it, puts its output in the results file
  local title=$1 limit=$2; shift 2
  log "" "## $title" "" '```'
  local t0=$(date +%s)
  timeout "$limit" "$@" 2>&1 | tail -n 60 | tee -a "$OUT"
  local rc=${PIPESTATUS[0]}
  log '```' "exit status $rc after $(( $(date +%s) - t0 )) s (limit $limit s)"
}

: > "$OUT"
log "# imwm GPU check" "" "$(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
log "" '```' "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3)" '```'

WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" > /dev/null; then  # offline: the machine's python3 and torch
  PY=${PYTHON:-python3}
  SITE=${SITE:-/tmp/imwm-site}
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  title="setup (offline): the machine's $PY and torch, imwm's other dependencies from $WHEELS"
  setup="$PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target $SITE $WHEELS/*.whl"
else
  PY=$VENV/bin/python
  title="setup: torch ${TORCH_VERSION} (${TORCH_CUDA}) and imwm"
  setup="(test -x $PY || python3 -m venv $VENV) && $PY -m pip install -q --upgrade pip &&
    $PY -m pip install -q torch==${TORCH_VERSION} --index-url https://download.pytorch.org/whl/${TORCH_CUDA} &&
    $PY -m pip install -q -e '.[dev]'"
fi
step "$title" 120 bash -c "$setup && $PY -c 'import torch, torchrl, tensordict, hydra, gymnasium, ale_py, imwm
print(\"torch\", torch.__version__, \"(pinned: ${TORCH_VERSION}), CUDA:\", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\",
      \"| torchrl\", torchrl.__version__, \"| tensordict\", tensordict.__version__)'"

bench_args() {  # bench_args <size> <compile mode> [compile scope]
  echo scripts/bench_update.py --device cuda --size "$1" --batch 16 --length 64 --repeats 10 --warmup 2 \
    --threads 4 --compile "$2" --compile-scope "${3:-phase}" --count-ops --no-torchrl
}
bench() {  # bench <size> <compile mode> <seconds>
  step "bench_update.py --device cuda --size $1 --compile $2" "$3" "$PY" $(bench_args "$1" "$2")
}

eager_part() {
  step "CUDA-marked tests" 50 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_devices.py
  bench S false 40
  bench 1M false 30
  local run; run=$(mktemp -d)
  step "preset=atari100k, 1,200 env steps on pong (176 updates, eager)" 90 "$PY" scripts/train.py preset=atari100k \
    env.task=pong device=cuda total_env_steps=1200 prefill=1024 eval_every=0 checkpoint_every=0 log_every=64 \
    logger=csv run_dir="$run"
  step "atari100k run: updates/s" 10 "$PY" - "$run" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/metrics.csv")))
last = [r for r in rows if r.get("train/updates_per_s")]
for r in last[-3:]:
    print({k: r[k] for k in ("train/env_steps", "train/updates", "train/updates_per_s", "train/compile_seconds")
           if k in r})
print("host syncs per update: see the 'host syncs' column of the bench_update tables above")
EOF
}

compiled_part() {  # the variants side by side, each its own process and log (kept beside OUT), gathered in order
  local dir=${OUT%.md}_compiled
  mkdir -p "$dir"
  local variants=("1M default step" "1M reduce-overhead step" "S default step" "S reduce-overhead step"
                  "1M reduce-overhead observe_step" "S reduce-overhead observe_step" "1M reduce-overhead phase")
  local k=0 v
  for v in "${variants[@]}"; do
    set -- $v
    ( t0=$(date +%s); timeout "$COMPILE_LIMIT" "$PY" $(bench_args "$1" "$2" "$3") > "$dir/$k.log" 2>&1
      echo "exit status $? after $(( $(date +%s) - t0 )) s (limit $COMPILE_LIMIT s)" >> "$dir/$k.log" ) &
    k=$((k + 1))
  done
  wait
  k=0
  for v in "${variants[@]}"; do
    set -- $v
    log "" "## bench_update.py --device cuda --size $1 --compile $2 --compile-scope $3 (run side by side)" "" '```'
    head -n -1 "$dir/$k.log" | grep -v -e UserWarning -e 'warnings.warn' | tail -n 40 | tee -a "$OUT"
    log '```' "$(tail -n 1 "$dir/$k.log")"
    k=$((k + 1))
  done
}

case $PART in
  eager) eager_part ;;
  compiled) compiled_part ;;
  all) eager_part; compiled_part ;;
  *) log "PART must be eager, compiled or all, not '$PART'"; exit 2 ;;
esac

summary() {  # every timed update of the results file as updates/s, one line each
  log "" "## summary: updates/s (1000 / median ms)" "" '```'
  log "$(awk -F'|' '/^## bench_update/{head=$0} /^\| imwm/{gsub(/ /, "", $3);
    printf "%-75s %7.1f updates/s (%s ms)\n", substr(head, 4), 1000 / $3, $3}' "$OUT")" '```'
}
summary
log "" "total $(( $(date +%s) - START )) s"
