# The README's two commands: `make search` (the main job) and `make test`.
# Each creates .venv when missing and installs raynas (editable) with its test and export extras.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.raynas-installed
ARGS ?=
# The offline CIFAR-10 copy beside the checkout when there is one, else torchvision downloads here.
DATA_DIR ?= $(if $(wildcard ../shared/data/cifar10/train.npz),../shared/data/cifar10,data/cifar10)
PYTEST_ARGS ?=

.PHONY: search test venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(VENV)/bin/python -m pip install --quiet -e '.[test,export]'
	touch $(STAMP)

search: $(STAMP)
	$(VENV)/bin/raynas search --config configs/quick-cpu.yaml --data-dir $(DATA_DIR) $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
