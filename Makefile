# One target each for the everyday commands. CI runs .ci/run, which uses the same test command.
.PHONY: install run check test bench screenshots

install:
	python3 -m pip install -e '.[dev]'

run:
	nakama up

check:
	ruff check .
	ruff format --check .
	mypy

test:
	python3 -m pytest

bench:
	python3 benchmarks/push_to_live.py
	python3 benchmarks/dependency_change.py
	python3 benchmarks/webhook_intake.py

# The README's screenshots of the web UI, taken by the browser test.
screenshots:
	NAKAMA_SCREENSHOTS=docs/screenshots python3 -m pytest tests/e2e/test_web_ui.py
