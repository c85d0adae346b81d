# Vetted: `make demo` runs the whole chain; `make test` runs the tests. Each sets itself up first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
export VETTED_HOME ?= $(CURDIR)/.vetted
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Airflow on 2 cores: a few workers, no examples, our DAGs
AIRFLOW_ENV = PATH=$(CURDIR)/$(BIN):$$PATH AIRFLOW_HOME=$(VETTED_HOME)/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__PARALLELISM=4 AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=2 \
	AIRFLOW__API__WORKERS=1 AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True VETTED_DEMO=1 \
	MLFLOW_TRACKING_URI=sqlite:///$(VETTED_HOME)/mlflow.db

.PHONY: venv demo test test-fast lint airflow mlflow serve clean benchmarks

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

demo: venv
	$(BIN)/vetted demo

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=1500

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not services"

lint: venv
	$(BIN)/ruff check ml dags plugins feature_repo tests benchmarks examples
	$(BIN)/ruff format --check ml dags plugins feature_repo tests benchmarks examples
	$(BIN)/mypy ml

# OpenLineage events of every task, one JSON per line; `make airflow OPENLINEAGE_TRANSPORT='{"type": "console"}'`
# prints them to the task logs instead (README, "Lineage")
OPENLINEAGE_TRANSPORT ?= {"type": "file", "log_file_path": "$(VETTED_HOME)/lineage/events.jsonl", "append": true}

airflow: venv
	@mkdir -p $(VETTED_HOME)/lineage
	@echo "Airflow UI: http://localhost:8080 (no login: every visitor is admin, SIMPLE_AUTH_MANAGER_ALL_ADMINS;"
	@echo "  so standalone prints no password; local use only). Trigger recsys_training from its page."
	@echo "Lineage events: $(VETTED_HOME)/lineage/events.jsonl. MLflow (model versions, task links): make mlflow"
	$(AIRFLOW_ENV) AIRFLOW__OPENLINEAGE__NAMESPACE=vetted AIRFLOW__OPENLINEAGE__TRANSPORT='$(OPENLINEAGE_TRANSPORT)' \
		$(BIN)/airflow standalone

mlflow: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(VETTED_HOME)/mlflow.db --host 127.0.0.1 --port 5000

serve: venv
	VETTED_DEMO=1 $(BIN)/vetted serve

benchmarks: venv
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VETTED_HOME)
