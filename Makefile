# streamsql: the two commands a new user needs.
#   make run   - set up a virtualenv (first time only) and open the SQL shell, embedded, no Kafka
#   make test  - set up and run the whole test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

run: setup
	$(VENV)/bin/python -m streamsql

test: setup
	@command -v tmux >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -q tmux >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q tmux >/dev/null)); } || true
	$(VENV)/bin/python -m pytest -q tests

bench: setup
	$(VENV)/bin/python bench/bench_stateless.py
	$(VENV)/bin/python bench/bench_log.py

clean:
	rm -rf $(VENV) build *.egg-info
