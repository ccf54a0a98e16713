# streamsql: `make run` opens the shell, `make test` runs the test suite, `make bench` the
# benchmarks. Each sets up .venv first (idempotent: re-installs only when pyproject.toml
# changes), so a fresh clone needs nothing but Python 3.11+ with pip and venv.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# The stamps' names carry a checksum of pyproject.toml: a changed dependency list reinstalls.
# `make run` installs what running needs (RUN_STAMP); `make test` adds the test extras
# (STAMP), which also satisfies the run install.
CKSUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(CKSUM)
STAMP := $(VENV)/.installed-test-$(CKSUM)
# Two workers (pytest-xdist), each test file whole on one of them (its module fixtures, its
# brokers and servers are set up once); the slowest tests are listed at the end, so that a
# suite growing towards its 20-minute budget shows where its time goes. PYTEST_ARGS= runs it
# in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25
# Apache Kafka's broker jars (kafka/pom.xml) are fetched into kafka/lib; the stamp's name carries
# the pom's checksum, so a changed pom fetches them again.
KAFKA_STAMP := kafka/lib/.fetched-$(shell cksum < kafka/pom.xml | cut -d' ' -f1)
# Kafka Connect's worker jars (kafka/connect-pom.xml) into kafka/connect-lib, the same way.
CONNECT_STAMP := kafka/connect-lib/.fetched-$(shell cksum < kafka/connect-pom.xml | cut -d' ' -f1)

.PHONY: setup setup-run run test bench tmux clean kafka-jars kcat kafka-up kafka-down mysqlclient-deps databases connect-jars connect-up connect-down bench-versus bench-peers chromium console

setup: $(STAMP)

setup-run: $(RUN_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Not --quiet: a first install takes minutes and a newcomer should see it moving.
$(RUN_STAMP): | $(PY) mysqlclient-deps
	@if [ -e $(STAMP) ]; then touch $@; else \
	  echo "installing streamsql and what it needs to run into $(VENV) (a few minutes the first time)"; \
	  $(PY) -m pip install --disable-pip-version-check --progress-bar on -e . && \
	  rm -f $(VENV)/.installed-run-* && touch $@; fi

$(STAMP): | $(PY) mysqlclient-deps
	@echo "installing streamsql with its test extras into $(VENV)"
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@ $(RUN_STAMP)

run: setup-run
	$(PY) -m streamsql

test: setup tmux kafka-jars connect-jars kcat databases chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# bench_versus.py is left to `make bench-versus`: it needs the peers built below and runs long.
bench: setup
	@for f in $(filter-out bench/bench_versus.py,$(wildcard bench/bench_*.py)); do echo "== $$f"; $(PY) $$f || exit 1; done

# streamsql side by side with Kafka Streams, Quix Streams and Bytewax on one broker
# (bench/bench_versus.py; BENCH_VERSUS_ARGS="--records 100000 --rounds 1" for a quick look). The
# peers are built first: Kafka Streams' jars from Maven Central into bench/kstreams/lib and the
# app compiled by javac into bench/kstreams/classes; Quix Streams and Bytewax from PyPI into a
# venv of their own, bench/.venv-peers (their dependencies stay out of the project's .venv).
# Not part of `make test` or `make bench`.
BENCH_VERSUS_ARGS ?= --memory
KSTREAMS_STAMP := bench/kstreams/classes/.built-$(shell cat bench/kstreams/pom.xml bench/kstreams/src/main/java/streamsql/bench/*.java | cksum | cut -d' ' -f1)
PEERS_STAMP := bench/.venv-peers/.installed-quixstreams-3.28-bytewax-0.21

bench-versus: setup kafka-jars bench-peers
	$(PY) bench/bench_versus.py --skip-build $(BENCH_VERSUS_ARGS)

bench-peers: $(KSTREAMS_STAMP) $(PEERS_STAMP)

$(KSTREAMS_STAMP):
	@echo "fetching Kafka Streams' jars into bench/kstreams/lib (mvn) and compiling the bench app"
	rm -rf bench/kstreams/lib bench/kstreams/classes
	mvn -B -q -f bench/kstreams/pom.xml dependency:copy-dependencies -DoutputDirectory=lib
	javac -cp 'bench/kstreams/lib/*' -d bench/kstreams/classes bench/kstreams/src/main/java/streamsql/bench/*.java
	touch $@

$(PEERS_STAMP):
	@echo "installing Quix Streams 3.28 and Bytewax 0.21 into bench/.venv-peers"
	$(PYTHON) -m venv bench/.venv-peers
	bench/.venv-peers/bin/pip install --disable-pip-version-check --progress-bar on 'quixstreams==3.28.*' 'bytewax==0.21.*'
	touch $@

# The shell tests drive the real shell in tmux. Installed when missing and possible (root with
# apt-get); `apt-get update` only if the plain install fails (a fresh machine's empty lists).
tmux:
	@command -v tmux >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing tmux (the shell tests need it)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null; }; \
	  else \
	    echo "tmux not found and cannot be installed here: the shell tests will be skipped (they fail under CI=true)"; \
	  fi; }

# The web console's browser tests (tests/test_console_browser.py) drive Debian's chromium
# headless through Playwright (no browser download): installed when missing and possible.
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (the web console's browser tests drive it)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	  else \
	    echo "chromium not found and cannot be installed here: the browser tests will be skipped (they fail under CI=true)"; \
	  fi; }

# Rebuilds the web console (server/console/web, Vite) into server/console/static, which is
# committed: running streamsql and `make test` need no Node.js. Run after changing web/.
console:
	cd server/console/web && npm ci && npm run build

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# Apache Kafka for the Kafka backend and its tests: the broker's jars from Maven Central into
# kafka/lib (then a class-data-sharing archive of them: brokers start twice as fast), and kcat,
# a second Kafka client for the tests. Without mvn the Kafka tests skip (they fail under CI=true).
kafka-jars: $(KAFKA_STAMP)

$(KAFKA_STAMP): kafka/pom.xml
	@if command -v mvn >/dev/null 2>&1; then \
	  echo "fetching the Kafka broker's jars into kafka/lib (mvn)"; \
	  rm -rf kafka/lib.new && \
	  mvn -B -q -f kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=lib.new && \
	  rm -rf kafka/lib && mv kafka/lib.new kafka/lib && \
	  { PYTHONPATH=. $(PYTHON) -m streamsql.testing.kafka cds || \
	    echo "warning: no class-data-sharing archive: brokers will start slower"; } && \
	  touch $@; \
	else \
	  echo "mvn not found: the Kafka broker's jars cannot be fetched (the Kafka tests will be skipped; they fail under CI=true)"; \
	fi

kcat:
	@command -v kcat >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing kcat (the Kafka tests use it as a second client)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null; }; \
	  else \
	    echo "kcat not found and cannot be installed here: the Kafka tests will be skipped (they fail under CI=true)"; \
	  fi; }

# A 3-broker KRaft cluster on 127.0.0.1:19092,29092,39092 (data and logs in .kafka/), detached;
# kafka-down stops it and keeps its data.
kafka-up: kafka-jars
	PYTHONPATH=. $(PYTHON) -m streamsql.testing.kafka up --dir .kafka --ports 19092,29092,39092

kafka-down:
	PYTHONPATH=. $(PYTHON) -m streamsql.testing.kafka down --dir .kafka

# Apache Kafka's own Kafka Connect worker, for connector classes streamsql does not build in
# (ksql.connect.url): its jars from Maven Central into kafka/connect-lib, connect-file moved to
# kafka/connect-lib/plugins/connect-file (the worker's plugin.path, as in Kafka's distribution).
connect-jars: $(CONNECT_STAMP)

$(CONNECT_STAMP): kafka/connect-pom.xml
	@if command -v mvn >/dev/null 2>&1; then \
	  echo "fetching the Kafka Connect worker's jars into kafka/connect-lib (mvn)"; \
	  rm -rf kafka/connect-lib.new && \
	  mvn -B -q -f kafka/connect-pom.xml dependency:copy-dependencies -DoutputDirectory=connect-lib.new && \
	  mkdir -p kafka/connect-lib.new/plugins/connect-file && \
	  mv kafka/connect-lib.new/connect-file-*.jar kafka/connect-lib.new/plugins/connect-file/ && \
	  rm -rf kafka/connect-lib && mv kafka/connect-lib.new kafka/connect-lib && \
	  touch $@; \
	else \
	  echo "mvn not found: the Kafka Connect worker's jars cannot be fetched (its tests will be skipped; they fail under CI=true)"; \
	fi

# A distributed Connect worker on http://127.0.0.1:8083 against `make kafka-up`'s brokers
# (group streamsql-connect, topics connect-configs/-offsets/-status; files in .kafka/connect),
# detached; connect-down stops it. streamsql sends connectors to it with
# --config ksql.connect.url=http://127.0.0.1:8083.
connect-up: connect-jars
	PYTHONPATH=. $(PYTHON) -m streamsql.testing.connect up --dir .kafka/connect --port 8083 \
	  --bootstrap-servers 127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092

connect-down:
	PYTHONPATH=. $(PYTHON) -m streamsql.testing.connect down --dir .kafka/connect

# The JDBC connectors' MySQL driver (mysqlclient, a C extension) builds against MariaDB's
# Connector/C: its headers and pkg-config come from apt before pip runs (root with apt-get).
mysqlclient-deps:
	@pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists mariadb 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing libmariadb-dev and pkg-config (mysqlclient builds against them)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libmariadb-dev pkg-config gcc >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libmariadb-dev pkg-config gcc >/dev/null; }; \
	  else \
	    echo "libmariadb-dev/pkg-config not found and cannot be installed here: installing mysqlclient will fail"; \
	  fi; }

# The JDBC connector tests start private MariaDB and PostgreSQL servers of their own
# (streamsql/testing/databases.py): Debian's servers, never started as services here.
databases:
	@{ command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mariadb-server and postgresql (the JDBC connector tests run against them)"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server postgresql >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server postgresql >/dev/null; }; } && \
	    { service mariadb stop >/dev/null 2>&1; service postgresql stop >/dev/null 2>&1; true; }; \
	  else \
	    echo "mariadb-server/postgresql not found and cannot be installed here: the JDBC tests will be skipped (they fail under CI=true)"; \
	  fi; }
