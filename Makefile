# cartback — run `make help` for the list of commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help

$(INSTALLED): pyproject.toml
	@PYTHON=$(PYTHON) VENV=$(VENV) tools/bootstrap-venv

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[1mmake %-8s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: $(INSTALLED) ## Run everything locally and play a shopper's journey (Ctrl-C stops it)
	@$(BIN)/python -m app.cli demo --port $(PORT)

.PHONY: demo-cloud
demo-cloud: $(INSTALLED) ## The demo on the WhatsApp Cloud API transport, against a local fake Graph API
	@PORT=$(PORT) tools/demo-cloud

.PHONY: test
test: $(INSTALLED) ## Install test services (Redis, PostgreSQL) and run the test suite
	@tools/ensure-test-services
	@$(BIN)/python -m pytest; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

.PHONY: lint
lint: $(INSTALLED) ## ruff (lint + format check) and mypy
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

.PHONY: format
format: $(INSTALLED) ## Apply ruff's formatting and safe fixes
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

.PHONY: bench
bench: $(INSTALLED) ## Run the benchmarks and rewrite bench/README.md with the figures
	@tools/ensure-test-services
	@$(BIN)/python -m bench.run

.PHONY: plugin
plugin: ## Build the WooCommerce companion plugin: dist/cartback-for-woocommerce.zip
	@tools/build-plugin

.PHONY: web
web: $(INSTALLED) ## Serve the web app (gunicorn) on PORT
	@$(BIN)/python -m app.cli db upgrade
	@$(BIN)/python -m app.cli web --bind 127.0.0.1:$(PORT)

.PHONY: worker
worker: $(INSTALLED) ## Run a worker (due carts, deliveries, queued jobs, the periodic sweep)
	@$(BIN)/python -m app.cli worker

.PHONY: clean
clean: ## Remove the virtualenv and local data (instance/)
	rm -rf $(VENV) instance
