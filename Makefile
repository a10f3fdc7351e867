# Set-up is idempotent: every target below creates or refreshes .venv from the pinned lock first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint serve browser clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements.lock -e ".[all,dev]"
	touch $(STAMP)

# Headless Chromium for the web page's end-to-end test (Debian's package; Playwright drives it).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: install
	$(BIN)/biomedclip demo --out runs/demo

serve: install
	$(BIN)/biomedclip serve --model local-dir:runs/demo/train/final --index runs/demo/index

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: install browser lint
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
