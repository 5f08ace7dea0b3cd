# OMI Portal. Two commands: `make run` (demo on embedded defaults) and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint check-deploy clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

.env:
	$(PYTHON) -c "import base64, os, secrets; print('DJANGO_DEBUG=true'); print('DJANGO_SECRET_KEY=' + secrets.token_urlsafe(50)); print('OMIPORTAL_CREDENTIAL_KEYS=k1:' + base64.b64encode(os.urandom(32)).decode()); print('OMIPORTAL_AUDIT_SIGNING_KEY=' + base64.b64encode(os.urandom(32)).decode())" > .env
	@echo "Wrote a development .env (DEBUG on, fresh random keys)."

## Set everything up and start the portal, the sandbox and a worker on http://127.0.0.1:8000
run: $(STAMP) .env
	OMIPORTAL_ENV_FILE=.env $(PY) -m omiportal.run_local

## Run the whole test suite (SQLite + embedded Redis unless DATABASE_URL / REDIS_URL are set):
## every test but the fault runs on TEST_PROCESSES xdist workers (a whole file per worker, each with
## its own database, Redis db and state directory: tests/xdist_services.py), and the fault runs, which
## restart PostgreSQL under every connection. With FAULT_DATABASE_URL (a PostgreSQL server of their
## own: .ci/run makes one on port 5433) they run beside the rest, on Redis database FAULT_REDIS_URL,
## their output printed after the rest's; without it, alone once the rest is done, on the same server.
## Exit 5 is "no test collected" (PYTEST_ARGS naming files without a fault run). --no-loadscope-reorder keeps the files in collection order
## (tests/conftest.py puts the ones that take minutes first); xdist's default hands out the files
## with the most tests first, which left the longest one-test files to the end. One process more
## than cores: the long tests mostly wait (on workers, the sandbox's latency, leases running out),
## and a third process fills those waits (2026-12-06, two cores: 690 s with 2, 480 s with 3).
TEST_PROCESSES ?= $(shell echo $$(( $$(nproc) + 1 )))
FAULT_REDIS_URL ?= redis://127.0.0.1:6379/15
MAIN_TESTS = $(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder -m "not fault_run" $(PYTEST_ARGS)
FAULT_TESTS = $(PY) -m pytest -m fault_run $(PYTEST_ARGS)
test: $(STAMP)
ifeq ($(FAULT_DATABASE_URL),)
	$(MAIN_TESTS)
	$(FAULT_TESTS) || [ $$? -eq 5 ]
else
	@log=$$(mktemp); \
	DATABASE_URL="$(FAULT_DATABASE_URL)" REDIS_URL="$(FAULT_REDIS_URL)" \
	  OMIPORTAL_VAR_DIR="$${OMIPORTAL_VAR_DIR:-$(CURDIR)/var}/fault-run" $(FAULT_TESTS) >"$$log" 2>&1 & faults=$$!; \
	$(MAIN_TESTS); main=$$?; \
	wait $$faults; fault=$$?; [ $$fault -eq 5 ] && fault=0; \
	echo "== The fault runs, on their own PostgreSQL server ($(FAULT_DATABASE_URL)): exit $$fault"; \
	cat "$$log"; rm -f "$$log"; \
	[ $$main -eq 0 ] && [ $$fault -eq 0 ]
endif

## Lint: ruff, then the layers contract (pyproject.toml, [tool.importlinter])
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

clean:
	rm -rf var staticfiles .pytest_cache
