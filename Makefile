# edgefleet: the two commands are `make demo` (the main job) and `make test` (the test suite).
# Both create .venv, install what they need, fetch the model zoo into .data and make sure Mosquitto 2.x
# is there. Nothing is installed outside this folder except Debian's mosquitto package when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export EDGEFLEET_DATA_DIR ?= $(CURDIR)/.data
STAMP  := $(VENV)/.installed
ZOO    := $(EDGEFLEET_DATA_DIR)/catalog.json

.PHONY: demo test lint typecheck layers venv zoo broker bench clean help

help:
	@echo "make demo   - start a private broker, a coordinator and three agents, deploy tenants, drive load"
	@echo "make test   - lint, type-check, layering check and the test suite (real broker, real models)"
	@echo "make bench  - edgefleet bench serving --json .bench/serving.json"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "edgefleet needs Python >= 3.10")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[onnx,litert,zoo,bench,systemd,dev]'
	touch $(STAMP)

venv: $(STAMP)

broker:
	@scripts/ensure-mosquitto.sh

$(ZOO): $(STAMP) models/catalog.json
	$(BIN)/edgefleet models fetch
	touch $(ZOO)

zoo: $(ZOO)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

test: $(STAMP) broker $(ZOO) lint typecheck layers
	$(BIN)/python -m pytest -q

demo: $(STAMP) broker $(ZOO)
	$(BIN)/edgefleet demo

bench: $(STAMP) broker $(ZOO)
	$(BIN)/edgefleet bench serving --json .bench/serving.json

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache
