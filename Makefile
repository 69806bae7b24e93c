# The two set-up commands of a fresh machine: `make run` (the platform on embedded defaults) and
# `make test` (the whole suite). Everything is installed from this repository's own files.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test typecheck install models livekit web bench clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml clients/livekit-plugin/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet -e 'clients/python[pipecat]' -e clients/livekit-plugin  # the clients (tests in tests/clients)
	touch $@

install: $(VENV)/.installed

models: install  ## fetch and verify the face model files (idempotent)
	$(BIN)/python -m pipelines.faces.models

livekit: install  ## build the LiveKit server once from its Go module (cached; idempotent)
	$(BIN)/python -m cluster.livekit_local build

web:  ## rebuild the playground's LiveKit viewer (livekit-client bundled by esbuild; the output is committed)
	cd web && npm ci --no-audit --no-fund && npm run build

run: install models livekit  ## local Ray + Serve on http://127.0.0.1:8000, SQLite and a storage folder under .data/
	AVATAR_ENABLE_PREVIEW_PLATFORM=$${AVATAR_ENABLE_PREVIEW_PLATFORM:-true} $(BIN)/avatarctl run

test: install models livekit  ## the whole suite (PostgreSQL tests run when it is reachable; CI requires it)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

typecheck: install  ## mypy over every package, core/ strict (config: [tool.mypy] in pyproject.toml)
	$(BIN)/mypy

clean-data:
	rm -rf .data
