# Two commands do all the set-up on a fresh machine:
#   make demo   run the retail example (pandas, local disk) and say where the outputs are
#   make test   run the whole test suite (what CI runs, plus `make lint`)
# And: make test-fast    the suite without Spark, Azurite, the Key Vault stand-in, a browser,
#                        the daemon or the slow tests: about two minutes; no Java, npm or Chromium
# And: make spark-demo   the retail example on a local Spark session instead of pandas
# And: make connect-demo the retail example over Spark Connect, on a server it starts here
# And: make azure-demo   the azure_pandas example on local Azure emulators (two storage
#                        accounts in Azurite, one key from an HTTPS Key Vault stand-in)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo azure-demo spark-demo connect-demo test test-fast lint ui browser clean bench services spark-jars

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The days of the retail example's daily pipeline (examples/retail/data/landing/daily/).
DEMO_DAYS := 2024-03-01..2024-03-03

demo: $(STAMP)
	$(BIN)/odibi-dagster run examples/retail --partition $(DEMO_DAYS)
	@echo
	@echo "outputs:  examples/retail/data/silver/  examples/retail/outputs/gold/"
	@echo "stories:  examples/retail/outputs/stories/<pipeline>/<run id>/story.html"
	@echo "web UI:   make ui   (then open http://127.0.0.1:3000)"

azure-demo: $(STAMP) services
	$(BIN)/python examples/azure_pandas/run_with_emulators.py

# The retail example on a local Spark session (Java 17 or 21) instead of pandas.
spark-demo: $(STAMP) spark-jars
	ODIBI_ENGINE=spark $(BIN)/odibi-dagster run examples/retail --partition $(DEMO_DAYS)

# The retail example over Spark Connect: a local server (pip's PySpark, the same jars,
# 127.0.0.1 and a free port) for the length of one `odibi-dagster run`.
connect-demo: $(STAMP) spark-jars
	$(BIN)/python -m odibi_dagster.resources.spark_connect_server $(BIN)/odibi-dagster run examples/retail --partition $(DEMO_DAYS)

# The Delta Lake and hadoop-azure jars a local Spark session loads, pinned and checked
# (SHA-1) from Maven Central; kept when already there.
spark-jars: $(STAMP)
	$(BIN)/odibi-dagster spark-jars

test: $(STAMP) browser services spark-jars
	$(BIN)/pytest

# The markers (pyproject.toml) say what a test needs; conftest.py sets most of them.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not (spark or azure or browser or daemon or slow)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

ui: $(STAMP)
	mkdir -p .dagster_home
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -w workspace.yaml

# The web UI tests drive Debian's Chromium; install it when we can (root, apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser tests will be skipped"; \
	  else \
	    echo "chromium not found (install it, e.g. apt-get install chromium): the browser tests will be skipped"; \
	  fi; }

# Azurite (the Azure Storage emulator) for the Azure tests, pinned in package-lock.json.
# npm writes node_modules/.package-lock.json on every install: it dates the installed tree.
services:
	@if [ ! -x node_modules/.bin/azurite-blob ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  npm ci --no-audit --no-fund --silent; fi

bench: $(STAMP) services spark-jars
	$(BIN)/python benchmarks/executors.py
	$(BIN)/python benchmarks/load_time.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/keyvault_requests.py
	$(BIN)/python benchmarks/spark_io.py
	$(BIN)/python benchmarks/upsert.py
	$(BIN)/python benchmarks/spark_connect.py
	$(BIN)/python benchmarks/sensor_ticks.py
	$(BIN)/python benchmarks/incremental_read.py --spark
	$(BIN)/python benchmarks/concurrent_appends.py local-parquet local-csv local-json \
	    azurite-parquet azurite-csv spark-parquet spark-csv

clean:
	rm -rf examples/*/data/silver examples/*/data/gold examples/*/outputs .dagster_home
