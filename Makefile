# Two commands matter: `make run` (the service with demo data) and `make test` (everything).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PORT ?= 8000
SANDBOX_PORT ?= 8765

.PHONY: run test lint format bench drill mutation install demo-setup clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# Web + worker + beat on the embedded default (SQLite under var/, filesystem broker), plus the
# local PagerDuty stand-in unless PAGERDUTY_API_KEY points the demo at a real account; keys may
# then be sent only to the stand-in (PAGERDUTY_ALLOWED_HOSTS), else to PagerDuty's own hosts.
# bin/run starts and stops it all (one Ctrl-C, exit status 0); the worker and beat run under
# bin/respawn, as a supervisor would restart them in production.
run: $(STAMP)
	@$(BIN)/python bin/run --port $(PORT) --sandbox-port $(SANDBOX_PORT)

# Uses the local PostgreSQL and Redis when they accept a connection (a login, a PING: not just an
# open port) and DATABASE_URL / REDIS_URL are unset — Redis on database 15, not 0 — so integration
# tests run here as in CI; elsewhere they skip and say why.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run -v 1
	@eval "$$($(BIN)/python bin/local-services)"; \
	echo "database: $${DATABASE_URL:-sqlite (var/)}  broker: $${REDIS_URL:-none}"; \
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/run.py

# kill -9, fault and broker-restart drills on the real stack; figures in docs/reliability.md.
drill: $(STAMP)
	$(BIN)/python bench/drill.py $(DRILL_ARGS)

# mutmut over the fast unit tests, module by module; scores and equivalent survivors in docs/testing.md.
# Not part of `make test`: it takes long. MUTATION_ARGS="--module matcher --keep --show" narrows it.
mutation: $(STAMP)
	$(BIN)/python bench/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf var/ mutants/ .pytest_cache .ruff_cache
