.DEFAULT_GOAL := help
.PHONY: help run test setup lint format bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: ## Install what is missing, migrate, load demo data, start every process
	@scripts/run.sh

test: ## Same setup, a private broker, topic prefix and test database; ruff, mypy and pytest
	@scripts/test.sh

setup: ## Install and start whatever is missing (idempotent)
	@scripts/setup.sh --browser

lint: ## ruff check and format check, mypy
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

format: ## ruff fix and format
	@.venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench: ## Run the benchmarks (they print figures; not tests)
	@scripts/bench.sh

clean: ## Remove the virtualenv and run-time files
	rm -rf .venv var node_modules
