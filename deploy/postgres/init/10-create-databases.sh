#!/usr/bin/env bash
# Postgres init step (run once by the postgres image, on an empty data volume): create the
# application database and the MLflow database, both owned by POSTGRES_USER.
#   APP_DB_NAME     the shared price store, users and prediction log (default: stockcast)
#   MLFLOW_DB_NAME  MLflow's tracking and registry store          (default: mlflow)
# Idempotent: a database that already exists is left alone, so it can be re-run by hand:
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-create-databases.sh
set -euo pipefail

: "${POSTGRES_USER:?POSTGRES_USER is not set}"
app_db="${APP_DB_NAME:-stockcast}"
mlflow_db="${MLFLOW_DB_NAME:-mlflow}"

for db in "$app_db" "$mlflow_db"; do
    if [[ ! "$db" =~ ^[a-z_][a-z0-9_]{0,62}$ ]]; then
        echo "init: database name '$db' must be lower-case letters, digits and _ (max 63)" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-postgres}" \
    --set=owner="$POSTGRES_USER" --set=app_db="$app_db" --set=mlflow_db="$mlflow_db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db')\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'mlflow_db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'mlflow_db')\gexec
SQL
echo "init: databases '$app_db' and '$mlflow_db' are ready"
