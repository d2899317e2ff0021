#!/usr/bin/env bash
# Wheels for running scripts/gpu_check.sh on a CUDA machine that has no network access.
#
#   bash scripts/gpu_wheels.sh            # on a machine with PyPI access: wheels into .whl/ (about 8 MB)
#   bash scripts/gpu_check.sh             # on the CUDA machine, with .whl/ copied beside the checkout
#
# A lent CUDA machine without network usually brings its own python3 with a CUDA build of torch
# and the other packages named in EXPECTED below, but not imwm's other dependencies. This fetches
# those as wheels for that python (PYVER, default 3.12; x86_64 manylinux), so gpu_check.sh can
# install them offline next to the machine's torch, whose version may differ from the one pinned in
# pyproject.toml (the results file prints both). Not fetched: wandb (the check logs to CSV) and the
# Hydra launcher plugins (sweeps only). The versions are pyproject.toml's pins and, for their
# dependencies, the versions `make setup` installed when this list was written; tests/test_packaging.py
# checks the pins and that every fetched package's requirements are fetched at accepted versions.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PYVER=${PYVER:-3.12}
PY=${PY:-python3}

# binary or pure-Python wheels on PyPI
WHEELS=(
  torchrl==0.14.1 tensordict==0.14.3 gymnasium==1.4.0 ale-py==0.12.1 hydra-core==1.3.8
  omegaconf==2.3.1 orjson==3.13.0 importlib-metadata==10.2.0 lazy-importer==0.1.0 zipp==4.1.2
  pyvers==0.2.3 hoptorch==0.1.4 farama-notifications==0.0.6
)
# only a source distribution on PyPI: built here into a pure-Python wheel
SDISTS=(antlr4-python3-runtime==4.9.3)
# what the CUDA machine must already have (its image's python3 packages)
EXPECTED=(torch numpy matplotlib tqdm packaging cloudpickle typing-extensions pyyaml pytest pytest-timeout scipy)

mkdir -p "$DIR"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${platforms[@]}" -d "$DIR" "${WHEELS[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DIR" "${SDISTS[@]}"
echo "$(ls "$DIR"/*.whl | wc -l) wheels in $DIR ($(du -sh "$DIR" | cut -f1)) for Python $PYVER"
echo "the CUDA machine's python3 must already have: ${EXPECTED[*]}"
