# Set-up is part of every target: a fresh clone needs nothing but `make test` or `make run`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: test run install data browser bench results

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,cluster]'
	touch $(STAMP)

install: $(STAMP)

# Debian's package holds the real Fashion-MNIST (60k + 10k images); needs root or sudo.
$(DATA):
	if [ "$$(id -u)" = 0 ]; then S=; else S=sudo; fi; \
	$$S apt-get update -qq && $$S apt-get install -y -qq dataset-fashion-mnist

data: $(DATA)

# Debian's headless chromium renders `resnas analyze`'s HTML report in tests.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then S=; else S=sudo; fi; \
	$$S apt-get update -qq && $$S apt-get install -y -qq chromium

browser: $(CHROMIUM)

test: install data browser
	$(BIN)/python -m pytest -n 2 -q

run: install data
	$(BIN)/resnas search --space search_spaces/resnet_family.yaml --budget 4GFLOPs --verify

results: install data
	bash results/make_default_run.sh

bench: install
	$(BIN)/python benchmarks/count_vs_fvcore.py
	$(BIN)/python benchmarks/train_step_vs_torchvision.py
