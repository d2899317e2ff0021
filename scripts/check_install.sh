#!/usr/bin/env bash
# Acceptance check of a normal install: imwm installed (not editable) into a fresh venv outside the
# repository, then run from another working directory through its console scripts, as a user would.
#
#   bash scripts/check_install.sh [BASE]      # BASE default /tmp/pkgcheck (wiped first); a few minutes
#
# BASE/src    the package source as it would be committed (tracked + untracked, not ignored, files;
#             so no build/ or .venv/ leftovers can leak into the wheel)
# BASE/venv   `python3 -m venv`, then `pip install torch==2.13.0` (CPU wheel from the local wheel
#             cache), then `pip install BASE/src` (non-editable)
# BASE/work   the working directory: imwm-train preset=debug writes runs/<name>/ here, then
#             imwm-eval (2 episodes, a GIF) and imwm-plot (learning curves) read it.
# Exit status 0 when every step and check passed; the last line is then "check_install: OK".
# PYTHON (default python3) is the interpreter the venv is made from.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${1:-/tmp/pkgcheck}
PYTHON=${PYTHON:-python3}
case "$BASE" in "$ROOT"|"$ROOT"/*) echo "check_install: BASE must be outside the repository" >&2; exit 2;; esac

step() { echo "== $*"; }
fail() { echo "check_install: FAILED: $*" >&2; exit 1; }

rm -rf "$BASE"
mkdir -p "$BASE/src" "$BASE/work"

step "source -> $BASE/src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -co --exclude-standard -z \
        | while IFS= read -r -d '' f; do [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -C "$BASE/src" -xf -
else
    cp -a "$ROOT/." "$BASE/src/"
    rm -rf "$BASE/src/.venv" "$BASE/src/build" "$BASE/src"/*.egg-info
fi

step "venv $BASE/venv"
"$PYTHON" -m venv "$BASE/venv"
export PATH="$BASE/venv/bin:$PATH"
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
pip install -q torch==2.13.0
pip install -q "$BASE/src"
pip check || echo "(pip check reported the above; continuing)"

cd "$BASE/work"
export WANDB_MODE=disabled IMWM_PROGRESS=0 OMP_NUM_THREADS=1

step "installed where"
python - "$ROOT" <<'EOF'
import sys, imwm, imwm.configs
root = sys.argv[1]
where = imwm.__file__
print("imwm:", where)
assert not where.startswith(root + "/"), f"imported from the repository: {where}"
assert (imwm.configs.CONFIG_DIR / "config.yaml").is_file(), "config.yaml not installed"
assert (imwm.configs.CONFIG_DIR / "preset" / "debug.yaml").is_file(), "presets not installed"
EOF
for cmd in imwm-train imwm-train-vta imwm-eval imwm-plot imwm-vta-viz imwm-vta-eval imwm-vta-detector; do
    command -v "$cmd" >/dev/null || fail "no console script $cmd"
done

step "imwm-train preset=debug logger=csv threads=1   (cwd $BASE/work)"
imwm-train preset=debug logger=csv threads=1 2>&1 | tee train.log
runs=(runs/cartpole-CartPole-v1-rssm-s0-*)
[[ ${#runs[@]} -eq 1 && -d ${runs[0]} ]] || fail "expected one run folder under $BASE/work/runs, got: ${runs[*]}"
run=${runs[0]}
for f in config.yaml metrics.csv checkpoints/latest.pt; do
    [[ -s "$run/$f" ]] || fail "$run/$f missing"
done
grep -q "^\[imwm\] env steps: 300, updates: 100, last eval return:" train.log || fail "no training summary"
grep -q "^\[imwm\] run folder: $run$" train.log || fail "summary names another run folder"
[[ ! -e outputs && ! -e .hydra ]] || fail "Hydra wrote outputs/ or .hydra/"

step "imwm-eval --run $run --episodes 2 --video ep.gif"
imwm-eval --run "$run" --episodes 2 --video ep.gif 2>&1 | tee eval.log
[[ -s ep.gif ]] || fail "no ep.gif"

step "imwm-plot runs --out c.png"
imwm-plot runs --out c.png 2>&1 | tee plot.log
[[ -s c.png ]] || fail "no c.png"

step "a user error is one line, exit status 2"
set +e
imwm-train preset=debug replay.batch_size=-1 >/dev/null 2>err.txt
status=$?
set -e
[[ $status -eq 2 ]] || fail "bad config: exit status $status, expected 2: $(cat err.txt)"
grep -q "^imwm: error: replay.batch_size: " err.txt || fail "bad config: $(cat err.txt)"
cat err.txt

echo "check_install: OK ($BASE/work/$run)"
