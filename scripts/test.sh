#!/usr/bin/env bash
# Runs every test of pg_enkf: formatting and lints, the numerics (enkf-core, release mode:
# the twin experiments need optimised code), the sidecar, the in-database tests
# (cargo pgrx test), then SQL-level and end-to-end tests against throwaway PostgreSQL 15
# clusters (pytest: pg_regress suite, cancel, docs examples, ...), the tests of tables on
# TimescaleDB too when it is installed (and a line saying they were skipped when not).
# Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

say() { printf '\033[1;34m==> %s\033[0m\n' "$*"; }
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
started=$(date +%s)

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --release --quiet -- -D warnings

say "enkf-core: unit, property and twin-experiment tests"
cargo test --release -p enkf-core

say "enkf-sidecar tests"
cargo test --release -p enkf-sidecar

say "cargo pgrx test pg15 (tests inside PostgreSQL)"
pgdata="$PWD/target/pgrx-test-pgdata"
rm -rf "$pgdata"
if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$pgdata" && chown postgres "$pgdata"
    (cd extension && cargo pgrx test pg15 --release --runas postgres --pgdata "$pgdata")
else
    (cd extension && cargo pgrx test pg15 --release)
fi

say "installing the release build of pg_enkf into PostgreSQL 15"
# cargo pgrx test installed a build with its test functions: replace it.
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then
    (cd extension && cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null)
else
    (cd extension && cargo pgrx install --release --sudo --pg-config "$PG_CONFIG" >/dev/null)
fi

say "cargo pgrx package, and the previous release from its commit (upgrade and package tests)"
# A clean output directory: pgrx leaves earlier versions' install scripts in it.
rm -rf target/release/pg_enkf-pg15
(cd extension && cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null)
.venv/bin/python tests/ops/pgops.py build-previous

timescaledb=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "scripts"); import pgcluster; print(pgcluster.timescaledb_version() or "")')
if [ -n "$timescaledb" ]; then
    say "SQL-level and end-to-end tests (pytest), on plain tables and on TimescaleDB $timescaledb"
else
    say "SQL-level and end-to-end tests (pytest), on plain tables only"
    printf '\033[1;33m%s\033[0m\n' "TimescaleDB is not installed: its runs are skipped. To run them, install it (as root: ../shared/tools/install-timescaledb.sh, or the timescaledb-2-postgresql-15 package) and run this again."
fi
.venv/bin/python -m pytest tests -q

say "all tests passed in $(( $(date +%s) - started )) s"
