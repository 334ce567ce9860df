# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SOURCES := fsm_spec generator generated runtime examples

.PHONY: demo test lint typecheck generate graphviz bench jepsen clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "raftfsm needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# graphviz's `dot` renders the role diagram; install the Debian package when we can.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing graphviz (Debian package) for the role diagram"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else \
	    echo "graphviz's 'dot' is missing: install it (e.g. 'sudo apt-get install graphviz') and rerun"; exit 1; \
	  fi; }

generate: $(STAMP) graphviz
	$(BIN)/python -m generator

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES) tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict $(SOURCES)

test: $(STAMP) graphviz
	$(BIN)/python -m generator --check
	$(BIN)/ruff check $(SOURCES) tests benchmarks
	$(BIN)/mypy --strict $(SOURCES)
	$(BIN)/python -m pytest -q

demo: $(STAMP) graphviz
	$(BIN)/raftfsm demo

bench: $(STAMP)
	$(BIN)/python benchmarks/dispatch.py

# Jepsen-style runs on real node processes (tests/test_jepsen.py with --long): kill -9,
# SIGSTOP and, as root, network partitions in namespaces; about ten minutes.
# JEPSEN_SEED=<n> replays a seed, JEPSEN_TIME=<s> sets the length of the mixed runs.
jepsen: $(STAMP)
	$(BIN)/python -m pytest -q -s -rxX --long tests/test_jepsen.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
