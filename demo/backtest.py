"""The demo: a real-time backtest of the epidemic twin on the bundled FluSight data, run inside an
embedded PostgreSQL 15 with pg_enkf.

For every Saturday of the 2023-24 and 2024-25 seasons the twin assimilates the weekly counts
through that Saturday only, then forecasts 0..3 weeks after the next Saturday (the FluSight
reference date). Forecasts are scored against the counts with the FluSight-style baseline beside
them; a table of WIS relative to the baseline is printed and a fan chart written.

    scripts/demo.sh                  (installs what it needs, then runs this)
    scripts/demo.sh --timescaledb    (the counts in a TimescaleDB hypertable, when installed)
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanchart import write_fan_chart  # noqa: E402
from pgcluster import TIMESCALEDB_INSTALLER, Cluster, preload, timescaledb_version  # noqa: E402

DATA = ROOT / "data" / "flusight"
SEASONS = [  # name, first and last reference date of the scored forecasts
    ("2023-24", dt.date(2023, 10, 7), dt.date(2024, 5, 25)),
    ("2024-25", dt.date(2024, 10, 5), dt.date(2025, 5, 31)),
]
CHART_LOCATIONS = ["US", "06", "48", "36", "12"]  # US, California, Texas, New York, Florida


def load(conn: psycopg.Connection, timescaledb: bool) -> None:
    """The bundled CSV files into flu.locations and flu.admissions (a hypertable on date with
    TimescaleDB). The counts go through a staging table and INSERT ... SELECT, never COPY into
    the table itself: COPY into a hypertable kills the backend when pgaudit is loaded
    (docs/operations.md, "TimescaleDB"), and this is the load a DBA should copy."""
    conn.execute("CREATE SCHEMA flu")
    conn.execute(
        """CREATE TABLE flu.locations (abbreviation text, location text PRIMARY KEY, location_name text,
                                       population numeric NOT NULL)"""
    )
    conn.execute(
        """CREATE TABLE flu.admissions (date date NOT NULL, location text NOT NULL REFERENCES flu.locations,
                                        location_name text, value numeric, weekly_rate float8,
                                        PRIMARY KEY (date, location))"""
    )
    if timescaledb:
        conn.execute("SELECT create_hypertable('flu.admissions', 'date', chunk_time_interval => interval '52 weeks')")
    conn.execute("CREATE TEMP TABLE admissions_staging (LIKE flu.admissions)")
    with conn.cursor() as cur:
        with cur.copy("COPY flu.locations FROM STDIN") as copy:
            with open(DATA / "locations.csv", newline="") as f:
                for row in csv.DictReader(f):
                    copy.write_row([row["abbreviation"], row["location"], row["location_name"], row["population"]])
        with cur.copy("COPY admissions_staging FROM STDIN") as copy:
            with open(DATA / "target-hospital-admissions.csv", newline="") as f:
                for row in csv.DictReader(f):
                    na = lambda v: None if v in ("NA", "") else v  # noqa: E731
                    copy.write_row([row["date"], row["location"], row["location_name"], na(row["value"]), na(row["weekly_rate"])])
    conn.execute("INSERT INTO flu.admissions SELECT * FROM admissions_staging")
    conn.execute("DROP TABLE admissions_staging")
    conn.execute("COMMENT ON TABLE flu.admissions IS 'Weekly laboratory-confirmed influenza admissions (NHSN via the CDC FluSight hub), public aggregate data'")


def saturdays(first: dt.date, last: dt.date):
    d = first
    while d <= last:
        yield d
        d += dt.timedelta(days=7)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "demo-output"), help="directory for the cluster, the chart and the tables")
    ap.add_argument("--members", type=int, default=300)
    ap.add_argument("--port", type=int, default=0, help="port of the demo cluster (default: a free one)")
    ap.add_argument("--timescaledb", action="store_true", help="keep the counts in a TimescaleDB hypertable (TimescaleDB must be installed)")
    args = ap.parse_args()
    if args.timescaledb and not timescaledb_version():
        print(f"--timescaledb: TimescaleDB is not installed in this PostgreSQL; install it (as root: {TIMESCALEDB_INSTALLER},"
              " or the timescaledb-2-postgresql-15 package) or run the demo without --timescaledb", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datadir = out / "pgdata"
    if datadir.exists():
        import shutil

        old = Cluster(datadir=datadir, keep=True)
        old.stop()
        shutil.rmtree(out / "pgdata", ignore_errors=True)
        shutil.rmtree(out / "sock", ignore_errors=True)
    cluster = Cluster(datadir=datadir, port=args.port or None, keep=True,
                      conf=preload(None, "timescaledb") if args.timescaledb else None)
    cluster.start()
    print(f"PostgreSQL 15 started: data directory {datadir}, port {cluster.port}")
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE flu_demo")
    dsn = cluster.dsn("flu_demo")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if args.timescaledb:
            conn.execute("CREATE EXTENSION timescaledb")
        conn.execute("CREATE EXTENSION pg_enkf")
        load(conn, args.timescaledb)
        n = conn.execute("SELECT count(*), count(DISTINCT location) FROM flu.admissions").fetchone()
        print(f"loaded {n[0]} weekly counts for {n[1]} locations from {DATA.relative_to(ROOT)}"
              + (" into the hypertable flu.admissions (TimescaleDB)" if args.timescaledb else ""))
        conn.execute(
            "SELECT enkf.create_twin('flusight', 'flu.admissions', 'flu.locations', time_column => 'date', members => %s)",
            (args.members,),
        )
        weeks = list(saturdays(SEASONS[0][1] - dt.timedelta(days=7), SEASONS[-1][2] - dt.timedelta(days=7)))
        t_start = time.monotonic()
        for i, through in enumerate(weeks, 1):
            t0 = time.monotonic()
            run = conn.execute("SELECT * FROM enkf.assimilate('flusight', %s::date)", (through,)).fetchone()
            t1 = time.monotonic()
            conn.execute("SELECT count(*) FROM enkf.forecast('flusight')").fetchone()
            t2 = time.monotonic()
            bar = "#" * (30 * i // len(weeks))
            print(
                f"\r[{bar:<30}] {i:3}/{len(weeks)} data through {through}: assimilated {run[2]:5} counts "
                f"in {t1 - t0:5.2f} s, forecast in {t2 - t1:4.2f} s",
                end="",
                flush=True,
            )
        print(f"\nbacktest done in {time.monotonic() - t_start:.1f} s")

        rows = []
        print()
        print("WIS relative to the FluSight-style baseline (lower is better; < 1 beats the baseline)")
        print(f"{'season':<9}{'horizon':>8}{'forecasts':>11}{'WIS':>10}{'baseline':>10}{'relative':>10}{'cov50':>7}{'cov95':>7}")
        for name, first, last in SEASONS:
            per_h = conn.execute(
                """SELECT horizon, sum(forecasts), sum(forecasts * wis), sum(forecasts * baseline_wis),
                          sum(forecasts * coverage_50), sum(forecasts * coverage_95)
                     FROM enkf.score('flusight', %s, %s) GROUP BY horizon ORDER BY horizon""",
                (first, last),
            ).fetchall()
            tot = [0, 0.0, 0.0]
            for h, n, w, b, c50, c95 in per_h:
                print(f"{name:<9}{h:>8}{n:>11}{w / n:>10.1f}{b / n:>10.1f}{w / b:>10.3f}{c50 / n:>7.2f}{c95 / n:>7.2f}")
                rows.append((name, h, n, w / n, b / n, w / b, c50 / n, c95 / n))
                tot[0] += n
                tot[1] += w
                tot[2] += b
            print(f"{name:<9}{'all':>8}{tot[0]:>11}{tot[1] / tot[0]:>10.1f}{tot[2] / tot[0]:>10.1f}{tot[1] / tot[2]:>10.3f}")
            rows.append((name, "all", tot[0], tot[1] / tot[0], tot[2] / tot[0], tot[1] / tot[2], None, None))
        with open(out / "relative_wis.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["season", "horizon", "forecasts", "wis", "baseline_wis", "relative_wis", "coverage_50", "coverage_95"])
            w.writerows(rows)

        chart = out / "fan_chart.svg"
        write_fan_chart(conn, "flusight", CHART_LOCATIONS, SEASONS[0][1], SEASONS[-1][2], chart)
        print(f"\nfan chart: {chart}")
        print(f"scores:    {out / 'relative_wis.csv'}")
    print("\nThe demo database is still running. Connect with:")
    print(f"    {cluster.psql_command('flu_demo')}")
    print("for example: SELECT * FROM enkf.hubverse_forecasts WHERE location = 'US' LIMIT 23;")
    print("Stop it with:")
    stop = f"pg_ctl -D {datadir} stop"
    print(f"    {'runuser -u postgres -- ' if cluster_is_root() else ''}/usr/lib/postgresql/15/bin/{stop}")
    return 0


def cluster_is_root() -> bool:
    import os

    return os.geteuid() == 0


if __name__ == "__main__":
    sys.exit(main())
