#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is created (the postgres image runs /docker-entrypoint-initdb.d/*.sh
# on an empty data directory only). One login role and one database per component, each with its own
# password from docker/.env, so no component can read another's tables:
#   airflow -> Airflow metadata and Celery results, mlflow -> MLflow tracking and registry,
#   vetted  -> the prod profile's own tables (VETTED_POSTGRES_DSN).
# Changing a password later: ALTER ROLE ... PASSWORD ... in psql, then update docker/.env (see docs/production.md).
set -euo pipefail

create_role_and_database() {
    local name="$1" password="$2"
    # psql variables (:"name" identifier, :'password' literal) quote safely whatever the value holds.
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
        -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
    echo "init-databases: created role and database '$name'"
}

create_role_and_database airflow "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in docker/.env}"
create_role_and_database mlflow "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in docker/.env}"
create_role_and_database vetted "${VETTED_DB_PASSWORD:?set VETTED_DB_PASSWORD in docker/.env}"
