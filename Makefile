# The two commands of the README: `make demo` and `make test`. Both create the virtual
# environment from the project's own files when it is missing or out of date.
PYTHON ?= python3.11
VENV ?= .venv
# requirements/torchrec-cuda.txt on a CUDA machine (fbgemm-gpu + faiss-gpu)
TORCHREC_REQUIREMENTS ?= requirements/torchrec-cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.stylerec-installed
PYTEST_ARGS ?=

export MLFLOW_TRACKING_URI ?= sqlite:///mlflow/mlflow.db
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: venv browser demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/torch.txt $(TORCHREC_REQUIREMENTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/torch.txt
	# torchrec declares the CUDA fbgemm-gpu: install it and its CPU kernels without deps
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r $(TORCHREC_REQUIREMENTS)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Debian's Chromium renders the A/B report in a test (headless screenshot and DOM)
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

demo: venv
	$(BIN)/stylerec demo

test: venv browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/synth.py
	$(BIN)/python benchmarks/style_embed.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) workspace .pytest_cache
