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
## its own database, Redis db and state directory: tests/xdist_services.py), then the fault runs alone,
## because they restart PostgreSQL under every connection. Exit 5 is "no test collected" (PYTEST_ARGS
## naming files without a fault run). --no-loadscope-reorder keeps the files in collection order
## (tests/conftest.py puts the ones that take minutes first); xdist's default hands out the files
## with the most tests first, which left the longest one-test files to the end. One process more
## than cores: the long tests mostly wait (on workers, the sandbox's latency, leases running out),
## and a third process fills those waits (2026-12-06, two cores: 690 s with 2, 480 s with 3).
TEST_PROCESSES ?= $(shell echo $$(( $$(nproc) + 1 )))
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder -m "not fault_run" $(PYTEST_ARGS)
	$(PY) -m pytest -m fault_run $(PYTEST_ARGS) || [ $$? -eq 5 ]

## Lint: ruff, then the layers contract (pyproject.toml, [tool.importlinter])
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

clean:
	rm -rf var staticfiles .pytest_cache
