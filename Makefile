# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
.PHONY: venv demo test lint format clean lock

venv:
	@scripts/bootstrap.sh

demo: venv
	@scripts/demo.sh

# The quality tests run twice: on this CPU's vector code, then with numpy's and torch's AVX2 / AVX-512 kernels off
# (SSE4 code; torch's convolutions through oneDNN, the rest through ATen), so that a change which only passes on one
# vector path fails here (BENCHMARKS.md, SIMD spread).
NO_SIMD = NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR" ONEDNN_MAX_CPU_ISA=SSE41 \
	ATEN_CPU_CAPABILITY=default

test: venv lint
	@.venv/bin/python -m pytest -q
	@echo "quality tests again, numpy and torch without AVX2 / AVX-512 ($(NO_SIMD)):"
	@$(NO_SIMD) .venv/bin/python -m pytest -q -m quality -p no:cacheprovider

# ruff (pinned in the lint extra): formatting and the rule set of pyproject.toml. `make format` applies both.
lint: venv
	@.venv/bin/ruff format --check --quiet . || (echo "ruff format would change the files above: make format" && false)
	@.venv/bin/ruff check --quiet .

format: venv
	@.venv/bin/ruff format --quiet .
	@.venv/bin/ruff check --quiet --fix .

# Refreshes requirements.lock (every version the bootstrap installs) from pyproject's ranges; review and commit it.
lock:
	@scripts/lock.sh

clean:
	rm -rf .venv demo_out .pytest_cache

# The full OpenMMLab pose stack (mmcv compiled with its ops, mmdet 3.3.0, mmpose 1.3.2) into .venv, for
# `epam-data extract --backend mmlab`: 20-30 min on a 2-core CPU machine; not part of `make venv` or CI.
.PHONY: mmlab
mmlab: venv
	@scripts/install_mmlab.sh
