# The two commands a newcomer needs: `make demo` and `make test`. Both install first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch is pinned to what the environment already has, or the local CPU build: never an unpinned torch,
# which would pull gigabytes of CUDA wheels onto a CPU machine.
TORCH_SPEC = torch==$(shell $(PY) -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || echo 2.13.0)
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.cpp)
NVCC ?= nvcc

.PHONY: install test test-all demo bench cuda-check system-deps clean

install: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH_SPEC)" setuptools wheel
	rm -f mmtok/_C.cpython-*.so  # a pre-abi3 build would shadow mmtok/_C.abi3.so
	$(PIP) install -q --no-build-isolation -e ".[test,bench]" "$(TORCH_SPEC)"
	-$(MAKE) -s system-deps
	$(PY) -m mmtok info
	touch $@

# Debian's espeak-ng makes speech for the audio tests (they skip with a message without it).
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -q espeak-ng >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng >/dev/null 2>&1)) \
	  || echo "espeak-ng not installed: speech-synthesis tests will be skipped"; }

# The CUDA kernels include only CUDA headers, so they compile here even though torch has no CUDA.
cuda-check:
	@if command -v $(NVCC) >/dev/null 2>&1; then \
	  for f in csrc/cuda/*.cu; do \
	    $(NVCC) -c -O3 -std=c++17 -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a $$f -o /tmp/mmtok_$$(basename $$f).o || exit 1; \
	    echo "nvcc: compiled $$f for sm_80 and sm_90a"; \
	  done; \
	else echo "nvcc not found: CUDA kernel compile check skipped"; fi

# CI (`.ci/run`) runs `make test`: everything but the cases marked slow (crash-and-resume subprocess sweeps,
# torch.compile of whole quantizers, extra Ray kill cases), to stay inside its 15 minutes. `make test-all` runs them too.
test: install cuda-check
	$(PY) -m pytest -q -ra -m "not slow" tests

test-all: install cuda-check
	$(PY) -m pytest -q -ra tests

demo: install
	$(PY) -m mmtok demo

bench: install
	$(PY) benchmarks/nearest_code.py

clean:
	rm -rf build $(VENV) mmtok/_C*.so *.egg-info
