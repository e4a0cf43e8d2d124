# fusionrec: `make demo` runs the nightly pipeline on embedded defaults; `make test` runs every test.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
# Embedded defaults: all state lives in this git-ignored folder inside the checkout.
export FUSIONREC_HOME ?= $(CURDIR)/.fusionrec
export AIRFLOW_HOME ?= $(FUSIONREC_HOME)/airflow
# Keras and matplotlib would otherwise write config and caches under ~.
export KERAS_HOME ?= $(FUSIONREC_HOME)/keras
export MPLCONFIGDIR ?= $(FUSIONREC_HOME)/matplotlib
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export SPARK_LOCAL_IP := 127.0.0.1
export TF_CPP_MIN_LOG_LEVEL := 2
# The real data sets beside the checkout, when there (tests that need them skip otherwise;
# .ci/run always sets it, so in CI they run).
export RECSYS_SHARED_DATA ?= $(wildcard $(abspath $(CURDIR)/../shared/data))

DATE ?= $(shell date -u -d yesterday +%F)
SCALE ?= small
DAYS ?= 14
INPUT ?=
CONF ?=

.PHONY: venv browser demo test ui stack stack-down stack-status bench-models bench-etl bench-retail bench-search bench-search-latency clean-state

venv: $(VENV)/.installed-bytecode

# uv resolves and installs the pinned set in well under a minute; constraints.txt freezes
# every transitive version so a fresh machine gets exactly what CI tested. --compile-bytecode:
# uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (these machines) no
# process ever writes one, so every Airflow task, spark-submit driver and test worker would
# compile TensorFlow, Keras, MLflow and Spark's Python from source at each start (16 s of a
# 42 s register_and_gate). The stamp's name changes with the recipe, so a venv made before
# is brought up to it.
$(VENV)/.installed-bytecode: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r requirements.txt -c constraints.txt
	touch $@

demo: venv
	$(PY) -m devtools.demo --date $(DATE) --scale $(SCALE) --days $(DAYS) $(if $(INPUT),--input $(INPUT)) $(if $(CONF),--conf '$(CONF)')

# tests/stack drives the Airflow and MLflow UIs in Debian's chromium (Playwright's own browser
# download does not work here): installed once when missing, as root (no sudo). Not root: a
# note, and the stack tests fail naming it.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "make browser: /usr/bin/chromium is missing and this is not root: run 'apt-get install -y chromium' as root (tests/stack needs it)"; fi; }

# Two workers on the two cores, one test file at a time each (tests/conftest.py says why).
test: venv browser
	$(PY) -m pytest -n 2 --dist loadfile

ui: venv
	$(PY) -m devtools.ui

# The production-shaped stack as processes (README "Production"): Spark standalone, MLflow
# server and Airflow's api-server / scheduler / dag-processor on the local PostgreSQL and
# Redis; state under $(FUSIONREC_HOME)/stack. Idempotent; stack-down stops every process.
stack: venv
	$(PY) -m devtools.stack up

stack-down: venv
	$(PY) -m devtools.stack down

stack-status: venv
	$(PY) -m devtools.stack status

# Published session-recommendation protocol on real data (bench/README.md); MODELS=pop,spop,item_knn,als,gru,sasrec
DATA ?= $(RECSYS_SHARED_DATA)/diginetica-srgnn
MODELS ?= pop,spop,item_knn
bench-models: venv
	nice -n 10 $(PY) bench/models.py --data $(DATA) --models $(MODELS)

# Spark (local[2]) against single-process pandas on the clean -> denoise -> normalize chain
# (bench/README.md); generated data is kept in $(FUSIONREC_HOME)/bench-etl for re-runs.
SIZES ?= 1000000 10000000 50000000
bench-etl: venv
	nice -n 10 $(PY) bench/etl.py --sizes $(SIZES) --work-dir $(FUSIONREC_HOME)/bench-etl

# UCI Online Retail (user level) through the nightly jobs with a time-based split (bench/README.md):
# DATA is its folder here; VALID_DAYS / TEST_DAYS size the splits (default 14 / 14).
bench-retail: DATA = $(RECSYS_SHARED_DATA)/online-retail
bench-retail: venv
	nice -n 10 $(PY) bench/online_retail.py --data $(DATA) --work-dir $(FUSIONREC_HOME)/bench-online-retail \
		$(if $(VALID_DAYS),--valid-days $(VALID_DAYS)) $(if $(TEST_DAYS),--test-days $(TEST_DAYS))

# Product search on generated searches (bench/README.md): BM25 against the LambdaRank rankers, with and
# without personal features, on a catalog of 100,000 items -> bench/results/search.json.
bench-search: venv
	nice -n 10 $(PY) bench/search.py

# The served search ranker's per-request latency on a 100,000-item catalog, beside BM25 alone
# (bench/README.md): builds a whole night on the generated `wide` world first (kept for --reuse).
bench-search-latency: venv
	$(PY) bench/search_latency.py

clean-state:
	rm -rf $(FUSIONREC_HOME)
