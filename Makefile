# Every target sets itself up: a fresh clone needs only python3 (3.11-3.13) and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= pipeline,ml,api,dev
STAMP := $(VENV)/.installed
# Every dependency of every extra, pinned: `make install` and the three images install from it.
LOCK := requirements.lock
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: audit install lock run ingest test lint format clean tools evaluate bench images stack-test

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	@touch $@

install: $(STAMP)

## lock: re-resolve requirements.lock after editing the dependencies in pyproject.toml
##       (keeps every pin it can; `make lock LOCK_ARGS=--upgrade` takes the newest releases)
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet -c $(LOCK) uv
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--custom-compile-command 'make lock' $(LOCK_ARGS) --quiet -o $(LOCK)

## audit: known vulnerabilities of every pin in requirements.lock (pip-audit, in a venv of its
##        own). Needs network access to a vulnerability database (PyPI's JSON API; add
##        AUDIT_ARGS='--vulnerability-service osv' for OSV); without it, it says the audit did
##        not run and exits 2, never "no known vulnerabilities". Not part of `make test`.
AUDIT_VENV ?= .venv-audit
audit:
	@test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && \
		$(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit; }
	$(AUDIT_VENV)/bin/python -m tools.audit $(AUDIT_ARGS)

## run: the demo on the embedded default (SQLite + MLflow under ./var), offline-capable:
##      migrate, ingest, train missing champions, create user demo, serve on 127.0.0.1:8000
##      (another port: make run RUN_PORT=8001)
RUN_PORT ?= 8000
run: $(STAMP)
	@mkdir -p var
	$(BIN)/alembic upgrade head
	$(BIN)/python -m data_pipeline ingest --source auto --no-findings > var/ingest-summary.json
	@$(BIN)/python -c "import json; s = json.load(open('var/ingest-summary.json')); \
	print('ingest: bars served by', ' and '.join(sorted({t['source'] for t in s['tickers'] if t['ok']})) or 'nothing', \
	'(summary in var/ingest-summary.json)')"
	$(BIN)/python -m data_pipeline coverage
	$(BIN)/python -m ml_lifecycle train --missing-only > var/train-summary.json
	@echo "training summary written to var/train-summary.json"
	$(BIN)/python -m app ensure-demo-user --base-url http://127.0.0.1:$(RUN_PORT)
	$(BIN)/python -m app serve --host 127.0.0.1 --port $(RUN_PORT)

## evaluate: walk-forward backtest of the default LSTM for the seven snapshot tickers (8 folds of
##           63 bars, refit per fold); prints relative MAE vs naive, DM p-value, directional
##           accuracy vs up days, interval coverage and fit seconds (docs/ml_lifecycle.md)
evaluate: $(STAMP)
	@mkdir -p var
	$(BIN)/alembic upgrade head
	$(BIN)/python -m data_pipeline ingest --source snapshot --no-findings > var/ingest-summary.json
	@status=0; began=$$(date +%s); $(BIN)/python -m ml_lifecycle backtest \
		--tickers PETR4.SA VALE3.SA BBAS3.SA CMIG4.SA AAPL MSFT SPY > var/backtest-summary.json || status=$$?; \
	$(BIN)/python -m ml_lifecycle report var/backtest-summary.json | tee var/evaluation.md; \
	echo "wall time: $$(( $$(date +%s) - began )) s; summary: var/backtest-summary.json, table: var/evaluation.md, plots: var/reports/"; \
	exit $$status

## bench: the performance benchmark: wrk (Debian package) against `python -m app serve` (2 workers)
##        and the ceiling beside it (a bare FastAPI app on the same server and workers), on the
##        local Postgres (database stockcast_bench, MLflow store var/bench/); prints the cases as
##        shares of the ceiling and of /health with issue 19's targets, and writes the table to
##        var/bench/results.md (docs/performance.md explains it). More options: BENCH_ARGS, e.g.
##        make bench BENCH_ARGS="--database stockcast_bench_b --port 18200"
BENCH_ARGS ?=
bench: $(STAMP)
	@command -v wrk >/dev/null || { \
		echo "installing wrk (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	}
	$(BIN)/python -m bench $(BENCH_ARGS)

## test: lint, type-check, then the whole suite (Postgres tests need 127.0.0.1:5432)
test: lint tools
	$(BIN)/python -m pytest

## images: build the three images (stockcast-api, -data-pipeline, -ml-lifecycle:$(IMAGE_TAG)) on
##         PYTHON_IMAGE (default: the official slim image), with host networking, and list them
PYTHON_IMAGE ?= python:3.11-slim-bookworm
IMAGE_TAG ?= latest
IMAGES := api=Dockerfile data-pipeline=Dockerfile.data_pipeline ml-lifecycle=Dockerfile.ml_lifecycle
images:
	@for spec in $(IMAGES); do \
		name=stockcast-$${spec%%=*}:$(IMAGE_TAG); file=$${spec#*=}; \
		echo "building $$name from $$file on $(PYTHON_IMAGE)"; began=$$(date +%s); \
		docker build --quiet --network host --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
			-f $$file -t $$name . >/dev/null || exit 1; \
		echo "built $$name in $$(( $$(date +%s) - began )) s"; \
	done
	@docker image ls --filter 'reference=stockcast-*:$(IMAGE_TAG)' \
		--format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}'

## stack-test: run the images for real against the local Postgres (tests/stack/README.md):
##             migrations, ingest, MLflow server, training, the API, the scheduled jobs, and
##             `docker compose up` of the stack. Needs a Docker engine; not part of `make test`.
stack-test: $(STAMP) images
	STOCKCAST_STACK_TEST=1 STOCKCAST_IMAGE_TAG=$(IMAGE_TAG) PYTHON_IMAGE=$(PYTHON_IMAGE) \
		$(BIN)/python -m pytest tests/stack -v -s -p no:cacheprovider

## tools: system tools the tests use that PyPI does not ship (Prometheus, from Debian)
tools:
	@command -v prometheus >/dev/null || { \
		echo "installing prometheus (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
		invoke-rc.d prometheus stop >/dev/null 2>&1 || true; \
	}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
