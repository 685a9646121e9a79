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
