#!/bin/sh
# Runs once, when the image's entrypoint creates the database cluster. The order of the
# extensions does not matter: pg_enkf's own tables stay plain tables under TimescaleDB
# (docs/operations.md, "TimescaleDB"); observation hypertables are read with time_bucket.
# TLS with the certificates made by the compose file's `certs` service, when mounted.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE EXTENSION IF NOT EXISTS pgaudit;
CREATE EXTENSION IF NOT EXISTS pg_enkf;
SELECT * FROM enkf.create_roles();
SQL
# The sidecar's application user (docker-compose.yml), an operator of the twins.
if [ -n "${ENKF_APP_PASSWORD:-}" ]; then
    # On standard input: psql substitutes :'pw' (quoted) there, not in -c.
    echo "CREATE ROLE enkf_app LOGIN IN ROLE enkf_operator PASSWORD :'pw';" |
        psql -v ON_ERROR_STOP=1 -v pw="$ENKF_APP_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB"
fi
if [ -f /certs/server.crt ]; then
    cat >> "$PGDATA/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '/certs/server.crt'
ssl_key_file = '/certs/server.key'
CONF
    # TCP only with TLS and SCRAM.
    sed -i 's/^host /hostssl /' "$PGDATA/pg_hba.conf"
fi
