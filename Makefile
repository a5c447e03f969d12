# Set-up and entry points. Every target builds the virtual environment on first use (and again
# whenever setup.cfg or pyproject.toml change), so a fresh clone needs only `make train` / `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# torch is installed only when the environment has none. Without an NVIDIA driver we ask for the
# CPU build by its local version (+cpu) so pip can never fall back to the multi-GB CUDA wheels.
# Elsewhere, point pip at PyTorch's index, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (CPU) or .../whl/cu128 (GPU), or install torch into $(VENV) yourself before running make.
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch==$(TORCH_VERSION),torch==$(TORCH_VERSION)+cpu)
TORCH_INDEX_URL ?=

.PHONY: setup train test test-all lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

# The main job: the default pretraining recipe, end to end on the built-in data. ARGS="--max_steps 50 ..."
# -q: a refused recipe ends with our one-line message, without accelerate's traceback on top.
train: setup
	$(BIN)/accelerate launch -q training/pretrain.py $(ARGS)

# The default suite (minutes; offline). PYTEST_ARGS="-k modeling" to narrow it.
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Also the long, opt-in tests (marker `slow`).
test-all: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# ruff (configured in pyproject.toml): lint rules and the formatter's verdict; CI runs this before the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrite the tree in the house format and apply ruff's safe fixes.
format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python -m cogfm_hf.benchmarks.model_speed

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
