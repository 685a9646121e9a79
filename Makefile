# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
.PHONY: venv demo test clean

venv:
	@scripts/bootstrap.sh

demo: venv
	@scripts/demo.sh

test: venv
	@.venv/bin/python -m pytest -q

clean:
	rm -rf .venv demo_out .pytest_cache

# The full OpenMMLab pose stack (mmcv compiled with its ops, mmdet 3.3.0, mmpose 1.3.2) into .venv, for
# `epam-data extract --backend mmlab`: 20-30 min on a 2-core CPU machine; not part of `make venv` or CI.
.PHONY: mmlab
mmlab: venv
	@scripts/install_mmlab.sh
