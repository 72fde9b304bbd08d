# distilad: `make demo` and `make test` are the two entry points (see README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser-deps lint bench-bottle results clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/distilad demo

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest tests

# Chromium for the browser test (tests/test_serve_browser.py): installed from the Debian packages
# when missing and this runs as root with apt-get; never fails (the test skips without it).
browser-deps:
	-@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver for the browser test (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { timeout 600 apt-get install -y -qq chromium chromium-driver || \
	      { timeout 300 apt-get update -qq && \
	        timeout 600 apt-get install -y -qq chromium chromium-driver; }; } >/dev/null 2>&1 || \
	    echo "could not install chromium; the browser test will be skipped"; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

results: $(STAMP)
	$(BIN)/python -m distilad.bench.results

clean:
	rm -rf $(VENV) build *.egg-info
