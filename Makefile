# medseg: `make demo` runs the service end to end; `make test` runs every check.
# VENV may point outside the clone (CI keeps one per dependency hash); it is built from nothing
# when missing.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_HASH)
DEBIAN_TOOLS := storescu:dcmtk dciodvfy:dicom3tools redis-server:redis-server Orthanc:orthanc chromium:chromium chromedriver:chromium-driver promtool:prometheus node:nodejs npm:npm
# Orthanc's PostgreSQL index: the ingest benchmark compares Orthanc and medseg on PostgreSQL.
ORTHANC_PG_INDEX := /usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real test data (public images from registry packages), cached outside the clone.
DATA_DIR ?= $(HOME)/.cache/medseg/data
export MEDSEG_TEST_DATA_DIR := $(DATA_DIR)

.PHONY: demo test lint typecheck unit integration system-deps venv clean test-data

demo: system-deps venv
	$(BIN)/medseg demo

# The suite waits on sockets, subprocesses and services for much of its time, so it runs on two
# processes even on two cores (13:41 serial, 8:30 on two, same Xeon); a module runs whole on one
# (its module-scoped stacks are started once). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope
test: system-deps venv test-data lint typecheck
	$(PYTEST) --durations=25 tests

unit: venv test-data
	$(PYTEST) tests/unit

integration: system-deps venv
	$(PYTEST) tests/integration

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Debian packages the tests and the demo need: DCMTK (a DICOM peer nobody here wrote),
# dicom3tools (dciodvfy, the IOD validator), a Redis server for the demo's private broker and
# Orthanc (the PACS the integration tests deliver results to, and the reference receiver of
# benchmarks/ingest.py, with its PostgreSQL index plugin); Prometheus (promtool checks the alert
# rules, and a real server scrapes a live stack in tests/integration/test_monitoring_live.py);
# node and npm (the single sign-on test runs an OpenID provider from the npm registry).
system-deps:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	[ -f $(ORTHANC_PG_INDEX) ] || missing="$$missing orthanc-postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The two real chest CTs of the pyradiomics 3.0.1 source package (lung1/lung2_image.nrrd, 512x512,
# 5 mm slices), fetched once with pip; the lung CT tests read them from MEDSEG_TEST_DATA_DIR.
test-data: venv
	@if [ ! -f $(DATA_DIR)/lung1_image.nrrd ] || [ ! -f $(DATA_DIR)/lung2_image.nrrd ]; then \
		mkdir -p $(DATA_DIR) && \
		$(BIN)/python -m pip download -q --no-deps --no-build-isolation pyradiomics==3.0.1 \
			-d $(DATA_DIR) && \
		tar -xzf $(DATA_DIR)/pyradiomics-3.0.1.tar.gz -C $(DATA_DIR) --strip-components=2 \
			pyradiomics-3.0.1/data/lung1_image.nrrd pyradiomics-3.0.1/data/lung2_image.nrrd; \
	fi

$(DEPS_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=68" wheel
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.deps-*
	touch $@

# The editable install is redone each time (seconds) so a cached venv points at this clone.
venv: $(DEPS_STAMP)
	@$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null

clean:
	rm -rf .venv demo-data medseg-data .mypy_cache .ruff_cache .pytest_cache *.egg-info
