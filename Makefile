# Two commands on a fresh machine:  `make run`  (set up + run every notebook)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= default
export TF_CPP_MIN_LOG_LEVEL ?= 3
export MPLBACKEND ?= Agg
export PYTHONUNBUFFERED = 1

.PHONY: setup system-packages run smoke lint lab test test-fast benchmarks clean-outputs gpu-bundle

setup: $(VENV)/.installed system-packages

# The venv is rebuilt when requirements.txt changes.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --user --name simsuite --display-name "Python (simsuite)" >/dev/null
	touch $@

# Debian packages: the full Fashion-MNIST (dataset-fashion-mnist), graphviz for model diagrams and
# TCMalloc (libtcmalloc-minimal4), which the training processes preload (helpers/allocator.py).
# They need root; without it the suite still runs (MNIST is embedded, diagrams are skipped, training
# uses glibc's allocator).
SYSTEM_PACKAGES = dataset-fashion-mnist graphviz libtcmalloc-minimal4
system-packages:
	@if [ -d /usr/share/datasets/fashion-mnist ] && command -v dot >/dev/null 2>&1 \
	    && ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then \
	  echo "system packages: $(SYSTEM_PACKAGES) already installed"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null) \
	  && echo "system packages: installed $(SYSTEM_PACKAGES)" \
	  || echo "system packages: apt-get failed; skipped (Fashion-MNIST, diagrams and TCMalloc need them)"; \
	else \
	  echo "system packages: skipped $(SYSTEM_PACKAGES) (need root and apt-get)."; \
	  echo "  Everything else runs; install them with: sudo apt-get install $(SYSTEM_PACKAGES)"; \
	fi

# Run every notebook headless (papermill) into runs/$(PROFILE)/ and write the gallery there.
run: setup
	$(PY) -m helpers.run --profile $(PROFILE)

smoke:
	$(MAKE) run PROFILE=smoke

# JupyterLab on notebooks/, new notebooks on the suite's kernel "simsuite" (registered by setup).
# LAB_ARGS passes more options, e.g. make lab LAB_ARGS="--no-browser --port 8890".
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --MultiKernelManager.default_kernel_name=simsuite $(LAB_ARGS)

# ruff (configured in pyproject.toml, notebooks included): lint rules, then the formatter's check.
lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# The whole test suite, notebooks included (smoke profile into a temporary folder), after the lint.
# pytest runs on TCMalloc where installed (as the notebook kernels and training workers do), in
# TEST_JOBS processes (pytest-xdist; a test file stays in one process, so module fixtures are shared).
TEST_JOBS ?= 2
PYTEST = LD_PRELOAD="$$($(PY) -m helpers.allocator)" TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776 \
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile
test: setup lint
	$(PYTEST) --durations=10

test-fast: setup
	$(PYTEST) -m "not slow"

benchmarks: setup
	$(PY) -m benchmarks.throughput
	$(PY) -m benchmarks.quality --seeds 0 1 2 --split-seeds 42 1 2 3

clean-outputs:
	rm -rf runs figures models_cache/*/ models_cache/*.png models_cache/*.h5 models_cache/*.json \
	  latent_space/*.png models_explain/*/ model_evaluation.csv

# What benchmarks/gpu.sh needs on a GPU machine with JAX, no TensorFlow and no network (.gpu/ is ignored).
GPU_WHEELS = keras==3.15.1 namex optree mlxtend==0.25.0 faiss-cpu==1.15.1
gpu-bundle: system-packages
	mkdir -p .gpu/whl .gpu/fashion-mnist
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .gpu/whl $(GPU_WHEELS)
	cp /usr/share/datasets/fashion-mnist/*.gz .gpu/fashion-mnist/
