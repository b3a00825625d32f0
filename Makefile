# Every target works on a fresh machine with only Python: `.venv` installs what is needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
ARGS    ?=

.PHONY: demo demo-synthetic test test-fast lint compile lint-cluster images clean

$(BIN)/scratchbert: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: any looser spec can pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/scratchbert            ## the main job: the local pipeline (make demo ARGS="--synthetic")
	$(BIN)/scratchbert run-local $(ARGS)

demo-synthetic: $(BIN)/scratchbert  ## the local pipeline on generated data, a few minutes on 2 cores
	$(BIN)/scratchbert run-local --synthetic $(ARGS)

test: $(BIN)/scratchbert            ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(BIN)/scratchbert
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: $(BIN)/scratchbert            ## ruff over the library, components, pipeline, tests and benchmarks
	$(BIN)/ruff check src components pipelines tests benchmarks

compile: $(BIN)/scratchbert         ## write pipelines/bert_pipeline.yaml and bert_pipeline_cpu.yaml
	$(BIN)/python pipelines/compile.py $(ARGS)
	$(BIN)/python pipelines/compile.py --cpu

lint-cluster: $(BIN)/scratchbert    ## hadolint, kustomize + schema validation, kind configs
	$(BIN)/python -m pytest tests/static

images:                             ## build both images (see scripts/build-images.sh --help)
	scripts/build-images.sh $(ARGS)

clean:
	rm -rf runs local_outputs .pytest_cache
