# The user's menu. `make help` lists the targets.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/local.yaml
DEMO_OUT ?= demo_out
DATAFLOW_CONFIG ?= configs/dataflow.yaml
BUCKET ?= gs://YOUR_BUCKET/posters
PYTEST_ARGS ?=

.PHONY: help install demo test bench lint clean \
        dataflow-preprocess dataflow-embed dataflow-index dataflow-candidates dataflow-nightly flex-template

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 24

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: setup.py $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create the virtual environment and install the project with its test tools

demo: install  ## run the main job end to end on the embedded synthetic catalog (DirectRunner)
	$(BIN)/posters demo --config $(CONFIG) --out $(DEMO_OUT)

test: install  ## run the whole test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install  ## the benchmarks (embed and index), written as JSON under bench_out/
	$(BIN)/posters bench embed --config $(CONFIG) --json bench_out/embed.json
	$(BIN)/posters bench index --n 100000 --json bench_out/index.json

clean:  ## remove demo and benchmark outputs
	rm -rf $(DEMO_OUT) bench_out
