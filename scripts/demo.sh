#!/usr/bin/env bash
# The demo: installs what it needs, builds and installs pg_enkf into PostgreSQL 15, starts an
# embedded cluster of its own (demo-output/pgdata, a free port), loads the bundled FluSight data
# and runs the real-time backtest of four seasons, 2021-22 to 2024-25. Prints the WIS table,
# writes demo-output/fan_chart.svg, and leaves the database running for psql. With --timescaledb
# (TimescaleDB installed) the counts live in a hypertable.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/pg.env
printf '\033[1;34m==> %s\033[0m\n' "building and installing pg_enkf (release)"
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then
    (cd extension && cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null)
else
    (cd extension && cargo pgrx install --release --sudo --pg-config "$PG_CONFIG" >/dev/null)
fi
exec .venv/bin/python demo/backtest.py "$@"
