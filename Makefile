# The two commands a new user needs: `make demo` and `make test`. Each builds or refreshes
# .venv by itself (whenever pyproject.toml changes), so a fresh clone needs nothing else.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo demo-xray test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

DEMO_LOGIN    := demo
DEMO_PASSWORD := cargogate-demo

demo: $(STAMP)
	rm -f var/demo-journal.sqlite var/demo-journal.sqlite-wal var/demo-journal.sqlite-shm
	echo '$(DEMO_PASSWORD)' | $(BIN)/cargogate user add $(DEMO_LOGIN) --role supervisor \
		--site config/demo.yaml --password-stdin
	@echo "console login: $(DEMO_LOGIN) / $(DEMO_PASSWORD)  (Ctrl-C stops the demo)"
	$(BIN)/cargogate run config/demo.yaml --duration 900

demo-xray: $(STAMP)
	rm -f var/demo-xray-journal.sqlite var/demo-xray-journal.sqlite-wal var/demo-xray-journal.sqlite-shm
	echo '$(DEMO_PASSWORD)' | $(BIN)/cargogate user add $(DEMO_LOGIN) --role supervisor \
		--site config/demo-xray.yaml --password-stdin
	@echo "console login: $(DEMO_LOGIN) / $(DEMO_PASSWORD)  (Ctrl-C stops the demo)"
	$(BIN)/cargogate run config/demo-xray.yaml --duration 900

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports  # the layering contracts in pyproject.toml [tool.importlinter]

bench: $(STAMP)
	$(BIN)/python bench/console.py
	$(BIN)/python bench/decision_path.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/model_eval.py
	$(BIN)/python bench/plc_roundtrip.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/risk_load.py
	$(BIN)/python bench/twin_speed.py

clean:
	rm -rf $(VENV) var reports .pytest_cache .mypy_cache .ruff_cache
