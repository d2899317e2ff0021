# Two commands do everything on a fresh machine:
#   make train   - set up .venv on first use, then run the default training job (CPU, ~15 min)
#   make test    - set up .venv on first use, then run the default test suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep glibc from returning memory to the OS between updates (measured 1-2 s/update saved at size S on CPU).
export GLIBC_TUNABLES := glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184
export WANDB_MODE ?= offline

.PHONY: setup train test test-all check-install bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py preset=laptop $(ARGS)

# one pytest worker per CPU core, at most 4 (pytest-xdist); tests are independent (own tmp dirs, ports asked of the OS)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal -m "" $(ARGS)

# a normal (non-editable) install in a fresh venv under /tmp/pkgcheck, run from outside the repo
check-install:
	bash scripts/check_install.sh $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
