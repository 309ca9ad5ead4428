# The user's menu. `make help` lists the targets.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/local.yaml
DEMO_OUT ?= demo_out
DATAFLOW_CONFIG ?= configs/dataflow.yaml
BUCKET ?= gs://YOUR_BUCKET/posters
PYTEST_ARGS ?=

.PHONY: help install airflow-venv demo test lint bench bench-scale clean worker-image flex-templates \
        dataflow-preprocess dataflow-embed dataflow-index dataflow-candidates dataflow-nightly dataflow-check-gpu

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 24

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: setup.py $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create the virtual environment and install the project with its test tools

# Airflow gets its own venv (its resolution beside Beam is not tried); the DAG test loads the Composer DAG in it.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_REQUIREMENTS := pipelines/composer/requirements.txt

$(AIRFLOW_VENV)/.installed: $(AIRFLOW_REQUIREMENTS)
	rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install -q -r $(AIRFLOW_REQUIREMENTS)
	touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed  ## the Airflow venv (pinned in pipelines/composer/requirements.txt)

demo: install  ## run the main job end to end on the embedded synthetic catalog (DirectRunner)
	$(BIN)/posters demo --config $(CONFIG) --out $(DEMO_OUT)

test: install airflow-venv  ## run the whole test suite (one worker per CPU)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: install  ## ruff, configured in ruff.toml
	$(BIN)/ruff check .

bench: install  ## the benchmarks (embed and index), written as JSON under bench_out/
	$(BIN)/posters bench embed --config $(CONFIG) --json bench_out/embed.json
	$(BIN)/posters bench index --n 100000 --json bench_out/index.json

bench-scale: install  ## index, candidates and the overlap report at 100k/200k/400k titles: time and memory (long)
	$(BIN)/posters bench scale --set index.vectors_per_shard=100000 --set candidates.faiss_threads=1 --json bench_out/scale.json

clean:  ## remove demo and benchmark outputs
	rm -rf $(DEMO_OUT) bench_out

# --- Dataflow ------------------------------------------------------------------------------------------------
# Fill in configs/dataflow.yaml (project, region, temp/staging bucket, service account) and set BUCKET, e.g.
#   make worker-image WORKER_IMAGE=us-central1-docker.pkg.dev/my-project/posters/worker:v1
#   make dataflow-check-gpu WORKER_IMAGE=…
#   make dataflow-nightly BUCKET=gs://my-bucket/posters WORKER_IMAGE=…
# Workers run the worker image (Dockerfile: Beam's SDK image, CUDA TensorFlow, faiss and this package), so they
# install nothing when they start; every target passes it. Each target launches a job and waits for it.
WORKER_IMAGE ?= us-central1-docker.pkg.dev/YOUR_PROJECT/posters/worker:latest
TEMPLATE_IMAGE ?= us-central1-docker.pkg.dev/YOUR_PROJECT/posters/launcher:latest
DATAFLOW_FLAGS := --config $(DATAFLOW_CONFIG) --sdk_container_image=$(WORKER_IMAGE)
DATAFLOW_GPU := --dataflow_service_options="worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
CATALOG_URI ?= $(BUCKET)/catalog/catalog.csv
MODEL_URI ?= $(BUCKET)/training/model
HISTORY_URI ?= $(BUCKET)/history/watch_history.parquet
DATE ?= $(shell date -u +%F)
STAGES := preprocess embed index candidates

worker-image:  ## build and push the Dataflow worker image (WORKER_IMAGE) with Cloud Build
	gcloud builds submit --tag $(WORKER_IMAGE) .

dataflow-check-gpu: install  ## a tiny Dataflow job on a T4 worker that fails unless TensorFlow sees the GPU
	$(BIN)/posters bench check-gpu $(DATAFLOW_FLAGS) $(DATAFLOW_GPU) --probes 2

dataflow-preprocess: install  ## preprocess the catalog (CATALOG_URI) on Dataflow
	$(BIN)/posters preprocess $(DATAFLOW_FLAGS) --catalog $(CATALOG_URI) --out $(BUCKET)/preprocessed

dataflow-embed: install  ## embed the catalog on Dataflow; only its inference step gets T4 workers (embed.accelerator)
	$(BIN)/posters embed $(DATAFLOW_FLAGS) --catalog $(CATALOG_URI) --model $(MODEL_URI) --out $(BUCKET)/embeddings

dataflow-index: install  ## build, verify and publish the index of BUCKET/embeddings on Dataflow
	$(BIN)/posters index $(DATAFLOW_FLAGS) --embeddings $(BUCKET)/embeddings --out $(BUCKET)/index

dataflow-candidates: install  ## item→item and user→item candidates on Dataflow
	$(BIN)/posters candidates $(DATAFLOW_FLAGS) --index $(BUCKET)/index --embeddings $(BUCKET)/embeddings --history $(HISTORY_URI) --out $(BUCKET)/candidates

dataflow-nightly: install  ## the nightly chain for DATE (default today, UTC) under BUCKET/nightly, driven from here
	$(BIN)/posters nightly $(DATAFLOW_FLAGS) --date $(DATE) --catalog $(CATALOG_URI) --model $(MODEL_URI) --history $(HISTORY_URI) --root $(BUCKET)/nightly

flex-templates:  ## the launcher image (flex_template/Dockerfile) and one template spec per stage: BUCKET/templates/<stage>.json
	gcloud builds submit --config flex_template/cloudbuild.yaml --substitutions=_WORKER_IMAGE=$(WORKER_IMAGE),_TEMPLATE_IMAGE=$(TEMPLATE_IMAGE) .
	for stage in $(STAGES); do \
	  gcloud dataflow flex-template build $(BUCKET)/templates/$$stage.json --image $(TEMPLATE_IMAGE) --sdk-language PYTHON \
	    --metadata-file flex_template/$${stage}_metadata.json \
	    --env FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/posters/flex_template/launch.py --env POSTERS_STAGE=$$stage \
	    --env POSTERS_WORKER_IMAGE=$(WORKER_IMAGE) || exit 1; \
	done
