#!/usr/bin/env bash
# One-shot setup run by the compose service `airflow-init` before any other Airflow component starts:
#   1. `airflow db migrate` creates or upgrades the metadata database (safe to run again on every start);
#   2. the admin login: Airflow 3's default SimpleAuthManager reads passwords from a JSON file
#      ([core] simple_auth_manager_passwords_file, on the `airflow-auth` volume that only this service and
#      the api-server mount). We write AIRFLOW_ADMIN_PASSWORD there, so no generated password is printed to
#      the logs. Users are listed in AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS (user:role).
set -euo pipefail

: "${AIRFLOW_ADMIN_USER:?set AIRFLOW_ADMIN_USER in docker/.env (copy docker/.env.example)}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in docker/.env (copy docker/.env.example)}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?the compose file must set the passwords file path}"

echo "airflow-init: migrating the metadata database"
airflow db migrate

echo "airflow-init: setting the password of Airflow user '${AIRFLOW_ADMIN_USER}'"
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
try:
    passwords = json.loads(path.read_text(encoding="utf-8") or "{}")
except FileNotFoundError:
    passwords = {}
except json.JSONDecodeError as exc:
    raise SystemExit(f"airflow-init: {path} is not valid JSON ({exc}); delete it and run airflow-init again")
passwords[os.environ["AIRFLOW_ADMIN_USER"]] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
tmp = path.with_name(path.name + ".tmp")
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as fh:
    json.dump(passwords, fh)
    fh.write("\n")
os.replace(tmp, path)
PY

echo "airflow-init: done"
