# Set-up is idempotent: every target below creates or refreshes .venv from the pinned lock first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint serve browser clean mutation

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
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

test: install browser lint
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

# Mutation testing of the core modules (scope: tools/mutation_score.py, survivors: docs/MUTATION.md). mutmut runs
# the tests in its mutants/ copy, where ../shared does not resolve, so the real fixtures are named explicitly.
# Its record of which tests reach which function is dropped first: kept, it misses functions added since.
SHARED ?= $(abspath ../shared)
MUTATION_CHILDREN ?= 4
mutation: install
	rm -f mutants/mutmut-stats.json
	set -f; BIOMEDCLIP_SHARED=$(SHARED) $(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) \
		$$($(BIN)/python tools/mutation_score.py --patterns)
	$(BIN)/python tools/mutation_score.py --survivors

clean:
	rm -rf $(VENV) runs .pytest_cache mutants
