# The README's two commands: `make run` (first run on SQLite) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test test-fast lint bench install install-dev clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed; point PYTHON at one: make run PYTHON=python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

.env:
	cp .env.example .env
	@echo "Created .env from .env.example (DEBUG on, console sender, offline replies)."

## First run: web server and worker loop together on SQLite (PORT=8000 by default: `make run PORT=8123`).
run: $(VENV)/.installed .env
	$(BIN)/python manage.py migrate --noinput
	@echo ""
	@echo "  Admin:      http://127.0.0.1:$(PORT)/admin/"
	@echo "              first create a login, in a second terminal: $(BIN)/python manage.py createsuperuser"
	@echo "  Webhook:    http://127.0.0.1:$(PORT)/webhooks/whatsapp/"
	@echo "  Try it:     $(BIN)/python manage.py simulate_inbound --url http://127.0.0.1:$(PORT) \"Hello!\""
	@echo "  Stop:       Ctrl-C (stops both the web server and the worker)"
	@echo ""
	@# The worker runs in the background; whatever ends the web server (Ctrl-C, a busy port) stops it too,
	@# with SIGTERM so that it finishes the job in hand.
	@$(BIN)/python manage.py run_outbound_jobs --loop --idle-sleep 1 & worker=$$!; \
	  trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

## The test suite (DATABASE_URL chooses the database; SQLite by default).
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

## While developing: the suite without the tests that start processes or servers (`make test` runs everything).
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run_all
	$(BIN)/python -m bench.knowledge

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
