# Two commands do all set-up on a fresh machine:
#   make repro   # venv + install + demo data (if data/ is empty) + dvc repro
#   make test    # venv + install + pytest
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export ITERATIVE_DO_NOT_TRACK := 1
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_LOGGING_LEVEL := WARNING
export TORCH_HOME := $(CURDIR)/.torch
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install data repro test diff flows

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip check
	$(BIN)/dfd plots-template .dvc/plots_offline.html
	touch $@

install: $(BIN)/.installed

data: install
	@if [ -z "$$(ls -A data 2>/dev/null)" ]; then echo "data/ is empty: writing the demo set"; dfd data demo data; fi

repro: data
	dvc repro

test: install
	$(BIN)/pytest -q -n 2 --dist loadfile

PREFECT_PORT ?= 4200
flows: install
	@mkdir -p .prefect
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)  (Ctrl-C stops the flows and the server)"
	@prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) > .prefect/server.log 2>&1 & \
	  pid=$$!; trap "kill $$pid" EXIT INT TERM; \
	  python -m flows.common wait http://127.0.0.1:$(PREFECT_PORT)/api && \
	  PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api python -m flows.deploy serve

diff: install
	@dvc params diff $${BASE:-HEAD} --md
	@dvc metrics diff $${BASE:-HEAD} --md
	@dfd metrics-diff --base $${BASE:-HEAD}
	@dvc plots diff $${BASE:-HEAD} -o reports/plots_diff >/dev/null && echo "plots: reports/plots_diff/index.html"
