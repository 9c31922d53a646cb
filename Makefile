# One target each for the everyday commands. Each runs in the virtual environment scripts/up and
# scripts/test make (.venv, or the active one); CI runs .ci/run, which uses the same test command.
.PHONY: install run check test bench screenshots

install:
	./scripts/dev true

run:
	./scripts/up

check:
	./scripts/dev ruff check .
	./scripts/dev ruff format --check .
	./scripts/dev mypy
	./scripts/dev lint-imports

test:
	./scripts/test

bench:
	./scripts/dev python benchmarks/push_to_live.py
	./scripts/dev python benchmarks/dependency_change.py
	./scripts/dev python benchmarks/webhook_intake.py

# The README's screenshots of the web UI, taken by the browser test.
screenshots:
	NAKAMA_SCREENSHOTS=docs/screenshots ./scripts/test tests/e2e/test_web_ui.py
