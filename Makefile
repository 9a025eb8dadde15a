# Rollcall — the two commands: `make run` (the stack + demo) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install run down test test-fast lint bench report faults sar purge clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

run: install  ## Kafka + every service + the synthetic borough demo, in the foreground
	$(PY) -m deploy.stack up $(ARGS)

down:  ## stop a stack started with ARGS=--detach
	$(PY) -m deploy.stack down

test: install lint  ## unit, integration (real Kafka, SQLite, PostgreSQL) and e2e tests
	ROLLCALL_TEST_POSTGRES_URL=$$(bash deploy/postgres.sh) $(VENV)/bin/pytest $(ARGS)

test-fast: install  ## the pure unit tests only
	$(VENV)/bin/pytest tests/unit $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services deploy borough bench faults
	$(VENV)/bin/lint-imports

bench: install  ## ingest throughput against real Kafka, SQLite and PostgreSQL
	ROLLCALL_BENCH_POSTGRES_URL=$$(bash deploy/postgres.sh) $(PY) -m bench $(ARGS)

faults: install  ## fault injection: a term replayed while services, Kafka and PostgreSQL are killed, e.g. ARGS="--rounds 3"
	$(PY) -m faults $(ARGS)

report: install  ## the annual borough report (HTML + PDF) from a running stack, e.g. ARGS="--year 2024-25"
	$(PY) -m services.rules.dashboard.report $(ARGS)

sar: install  ## subject-access export of one pupil from the running services, e.g. UPN=A343200018001 ARGS="--out sar.json"
	@test -n "$(UPN)" || { echo 'usage: make sar UPN=<upn> [ARGS="--purpose ... --out file"]'; exit 2; }
	$(PY) -m shared.sar $(UPN) $(ARGS)

purge: install  ## delete what is past retention in one service's database, e.g. ARGS="rules --dry-run"
	$(PY) -m shared.retention $(ARGS)

clean:
	rm -rf data
