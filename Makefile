# A fresh machine needs only these two:  `make demo`  and  `make test`.
# Each creates the virtual environment .venv (torch, numpy, ...) if missing and builds the
# extension in place: CUDA kernels when a toolkit is found (CUDA_HOME, default /usr/local/cuda),
# CPU only otherwise or with IVAE_FORCE_CPU=1.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
DEPS := "$(TORCH_SPEC)" numpy scipy tqdm matplotlib scikit-learn ninja setuptools wheel pytest pytest-benchmark hypothesis

export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda)
export MAX_JOBS ?= 2
BUILD_MODE := $(if $(filter 1,$(IVAE_FORCE_CPU)),cpu,$(if $(CUDA_HOME),cuda,cpu))

.PHONY: demo test build bench ratios fuzz gpu-check clean

$(VENV)/.deps-installed:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(DEPS)
	touch $@

# Compiles into build/<mode> (ninja rebuilds only what changed) and puts _C next to the sources;
# a .pth file makes the source tree importable from the venv, as an editable install would.
# Prints a summary; the compiler's output goes to build/<mode>/build.log (VERBOSE=1 shows it too).
build: $(VENV)/.deps-installed
	@$(PY) tools/quiet_build.py --build-temp build/$(BUILD_MODE) $(if $(filter 1,$(VERBOSE)),--verbose)
	@$(PY) -c "import site, os; open(os.path.join(site.getsitepackages()[0], 'ivae_ext_dev.pth'), 'w').write(os.getcwd())"

test: build
	$(PY) -m pytest tests -q

# Hostile-input fuzzing of every op (tests/fuzz_ops.py): FUZZ_EXAMPLES per op, counts in FUZZ_JSON.
FUZZ_EXAMPLES ?= 10000
FUZZ_JSON ?= runs/fuzz_ops.json
fuzz: build
	OMP_NUM_THREADS=1 $(PY) tests/fuzz_ops.py --examples $(FUZZ_EXAMPLES) --json $(FUZZ_JSON)

demo: build
	$(PY) -m ivae_ext reproduce ivae --quick --out runs/ivae-quick

ratios: build
	$(PY) benchmarks/ratios.py --out benchmark_ratios.json

# On a machine with a CUDA GPU: builds for its architecture, runs the CUDA tests and the ratio
# table there, writes gpu_report.json and gpu_report.md. Refuses (exit 2) when no GPU is visible.
gpu-check: $(VENV)/.deps-installed
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

bench: build
	$(PY) -m pytest benchmarks -q -o python_files='bench_*.py' --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

clean:
	rm -rf build ivae_ext/_C*.so *.egg-info
