# The README's two commands: `make run` (first run on SQLite) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint bench install install-dev clean

$(BIN)/python:
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

## First run: web server and worker loop together on SQLite.
run: $(VENV)/.installed .env
	$(BIN)/python manage.py migrate --noinput
	@echo ""
	@echo "  Admin:      http://127.0.0.1:$(PORT)/admin/   (create a login: $(BIN)/python manage.py createsuperuser)"
	@echo "  Webhook:    http://127.0.0.1:$(PORT)/webhooks/whatsapp/"
	@echo "  Try it:     $(BIN)/python manage.py simulate_inbound --url http://127.0.0.1:$(PORT) \"Hello!\""
	@echo ""
	@trap 'kill 0' INT TERM EXIT; \
	  $(BIN)/python manage.py run_outbound_jobs --loop --idle-sleep 1 & \
	  $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

## The test suite (DATABASE_URL chooses the database; SQLite by default).
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
