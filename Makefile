# Two commands for a fresh clone: `make train DATA=kml_mixup` and `make test`.
# Both create the virtual environment and install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: headless EGL through Mesa, and the offline real-image data set.
DEB_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 dataset-fashion-mnist
# The offline real photographs of the experiment's out-of-domain row (procedural_perception/datasets/wallpapers.py).
PHOTO_PACKAGES := mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04

DATA ?= kml_mixup
MODEL ?= dino
ARGS ?=
QUICK ?= 0
N ?= 10000
OUT ?= $(if $(filter export,$(MAKECMDGOALS)),exported,render/$(DATA))
CKPT ?= random_vit
# Unset: the checkpoint's own training-run settings (else Fashion-MNIST), so make eval repeats what training logged.
MEMORY ?=
QUERY ?=
EVALS ?= all
# TensorBoard listens on this machine only; TB_HOST=0.0.0.0 exposes it to the network (a deliberate choice).
TB_HOST ?= 127.0.0.1
export PYOPENGL_PLATFORM := egl
export QUICK

.DEFAULT_GOAL := help
.PHONY: help setup system photos debs train test test-fast lint tensorboard render eval export gpu-check memory experiment \
        bench bench-render bench-train bench-memory bench-ddp bench-compositional bench-scan bench-faults \
        bench-diversity bench-feature-norm bench-backbones clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DATA=$(DATA) MODEL=$(MODEL) ARGS='key=value ...' QUICK=1 (benchmarks) N/OUT (render)"

setup: system $(STAMP) ## Create .venv and install everything the project needs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# Only the data files of these two are read (segmentation images with masks); their own
	# dependencies are heavy and unused, hence --no-deps.
	$(PY) -m pip install -q --no-deps stardist==0.9.2 imgaug==0.4.0
	touch $(STAMP)

system: ## Install the Debian packages (EGL, Fashion-MNIST) when missing; needs root
	@$(MAKE) --no-print-directory debs PACKAGES="$(DEB_PACKAGES)"

photos: ## Install the wallpaper photographs of the experiment's real-photo row (Debian packages); needs root
	@$(MAKE) --no-print-directory debs PACKAGES="$(PHOTO_PACKAGES)"

debs:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages: $$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || { echo "apt-get failed; install by hand: apt-get install $$missing" >&2; exit 1; }; \
	else \
	  echo "Missing Debian packages: $$missing" >&2; \
	  echo "Install them with: sudo apt-get install $$missing" >&2; exit 1; \
	fi

train: setup ## Train: make train DATA=kml_mixup [MODEL=dino] [ARGS="trainer.max_steps=200"]
	$(PY) -m procedural_perception.cli.train data=$(DATA) model=$(MODEL) $(ARGS)

test: setup ## Run the whole test suite (slow tests included)
	$(PY) -m pytest -q $(ARGS)

test-fast: setup ## Run the tests not marked slow
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: setup ## Ruff
	$(VENV)/bin/ruff check .

tensorboard: setup ## TensorBoard on runs/
	$(VENV)/bin/tensorboard --logdir runs --host $(TB_HOST)

render: setup ## Write images + contact sheet: make render DATA=kml_mixup N=10000 OUT=dir
	$(PY) -m procedural_perception.cli.render --data $(DATA) -n $(N) --out $(OUT) $(ARGS)

eval: setup ## Evaluate: make eval CKPT=path|random_vit|rgb|efficientnet_lite0 [MEMORY=... QUERY=...] EVALS=all [SUITE=paper ROOT=/data]
	$(PY) -m procedural_perception.cli.eval --encoder $(CKPT) $(if $(MEMORY),--memory $(MEMORY)) $(if $(QUERY),--query $(QUERY)) --evals $(EVALS) $(if $(SUITE),--suite $(SUITE) --root $(ROOT)) $(ARGS)

export: setup ## Export a checkpoint for timm / plain PyTorch: make export CKPT=runs/<run>/checkpoints/last.ckpt OUT=dir
	$(PY) -m procedural_perception.cli.export $(CKPT) $(OUT)

gpu-check: setup ## Exercise every GPU path once (EGL per rank, bf16 DINO step, faiss-gpu, DDP); report in runs/gpu_check
	$(PY) -m procedural_perception.cli.gpu_check $(ARGS)

memory: setup ## Visual memory command: make memory ARGS="build|classify|forget|audit|info|check ..."
	$(PY) -m procedural_perception.cli.memory $(ARGS)

experiment: setup photos ## Procedural-versus-real transfer experiment (results under docs/results/)
	$(PY) -m benchmarks.experiment $(ARGS)

bench-render: setup ## Rendering throughput vs decoding JPEGs (QUICK=1 for < 60 s)
	$(PY) -m benchmarks.render

bench-train: setup ## Training images/s: Lightning module vs plain PyTorch step
	$(PY) -m benchmarks.train

bench-memory: setup ## Visual memory: faiss vs torch search, removal, privacy audit vs leave-one-out
	$(PY) -m benchmarks.memory

bench-ddp: setup ## Training images/s with 2 processes vs 1 (gloo, CPU)
	$(PY) -m benchmarks.ddp

bench-compositional: setup ## Compositional generalisation table (encoder-only vs generative)
	$(PY) -m procedural_perception.compositional.benchmark

bench-scan: setup ## Folder scanning: header checks vs decoding every file (100k-file tree; QUICK=1: 5k)
	$(PY) -m benchmarks.scan

bench-faults: setup ## Fault matrix: hostile files/programs, damaged state, crashes; what survived (QUICK=1 < 60 s)
	$(PY) -m benchmarks.faults $(ARGS)

bench-diversity: setup ## Vendi score, spectrum slope, colour statistics per process beside real photos (QUICK=1: < 60 s)
	$(PY) -m benchmarks.diversity

bench-backbones: setup ## Training images/s of the cpu profile with resnet18 / resnet10t vs the ViT (QUICK=1: model step only)
	$(PY) -m benchmarks.backbones

bench-feature-norm: setup ## Centring / whitening with procedural statistics on Fashion-MNIST kNN: CKPT="a.ckpt [b.ckpt ...]"
	$(PY) -m benchmarks.feature_norm $(if $(filter %.ckpt,$(CKPT)),--checkpoint $(filter %.ckpt,$(CKPT)))

bench: bench-render bench-train bench-memory bench-ddp bench-compositional ## Every benchmark, then one report
	$(PY) -m benchmarks.report

clean: ## Remove caches (keeps .venv and runs/)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
