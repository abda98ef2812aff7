# The two commands a newcomer types: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto')
export PYTHONPATH := $(CURDIR)/gen:$(CURDIR)
export ONESTOP_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test test-slow test-all gen lint bench demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

gen/.stamp: $(VENV)/.installed $(PROTOS) tools/gen_protos.py
	$(PY) tools/gen_protos.py
	touch $@

gen: gen/.stamp  ## regenerate the Python stubs (with .pyi type stubs) from protos/

run: gen/.stamp  ## serve gRPC and the gateway on loopback with real data (SQLite under var/)
	$(PY) -m server run

test: gen/.stamp node_modules/.installed  ## the default suite (slow soak/fault tests excluded)
	$(PY) -m pytest -q

test-slow: gen/.stamp node_modules/.installed  ## soak, load and fault tests (exit 5 = none collected is fine)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

test-all: gen/.stamp
	$(PY) -m pytest -q -m ''

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

lint: node_modules/.installed  ## buf lint (STANDARD rules)
	npx --no-install buf lint

bench: gen/.stamp  ## every benchmark, one table with ratios against same-run baselines
	$(PY) -m bench

demo: gen/.stamp
	$(PY) -m clients.demo

clean:
	rm -rf gen var .venv node_modules
