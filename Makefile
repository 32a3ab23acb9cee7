# runyard: `make demo` runs the main job, `make test` runs every check. Both set up first.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --locked --no-sync

.PHONY: setup demo test lint types unit bench screens clean

setup: .venv/.synced

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install -q "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	@touch $@

demo: setup
	$(RUN) runyard demo

test: setup lint types
	$(RUN) pytest -q

lint: setup
	$(RUN) ruff check src tests bench competitions
	$(RUN) ruff format --check src tests bench competitions
	$(RUN) lint-imports

types: setup
	$(RUN) mypy

unit: setup
	$(RUN) pytest -q tests/unit

bench: setup
	$(RUN) python bench/queue_scale.py
	$(RUN) python bench/reconcile.py
	$(RUN) python bench/probe_parse.py
	$(RUN) python bench/fleet_refresh.py --quick
	$(RUN) python bench/console_latency.py

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
