"""What writing one county-scale forecast (25,144 rows: 3,143 locations x 4 horizons x 2 models,
23 quantiles each) costs in plain SQL, from a temporary table, without pg_enkf's own code in
the way: the floor under `enkf.forecast`'s writes (docs/benchmarks.md).

    .venv/bin/python bench/forecast_writes.py [--smoke]

--smoke is the test command's run: 5 locations (40 rows), two reference dates, checking that each
statement wrote its rows; it times nothing worth reading.

It starts its own throwaway cluster (never port 5432) and removes it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from pgcluster import Cluster  # noqa: E402

LEVELS = "'{0.01,0.025,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95,0.975,0.99}'::float8[]"
COLUMNS = "twin_id, reference_date, model, location, horizon, target_end_date, run_id, quantile_levels, quantile_values"
UPSERT = """ ON CONFLICT (twin_id, reference_date, model, location, horizon) DO UPDATE
    SET target_end_date = EXCLUDED.target_end_date, run_id = EXCLUDED.run_id,
        quantile_levels = EXCLUDED.quantile_levels, quantile_values = EXCLUDED.quantile_values"""


def rows(reference: str, twin: str = "(SELECT twin_id FROM enkf.twins)") -> str:
    return (f"SELECT {twin}, {reference}, m, location, h, {reference} + 7 * h, 1, {LEVELS}, v FROM src")


def timed(db, sql: str, reps: int, table: str, n: int) -> str:
    """Runs `sql` for `reps` reference dates, each writing the `n` rows of src into `table`."""
    times = []
    for k in range(reps):
        t = time.perf_counter()
        db.execute(sql.replace("@REF", f"(DATE '2024-01-06' + {7 * k})"))
        times.append(time.perf_counter() - t)
    written = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert written == reps * n, f"{table}: {written} rows after {reps} reference dates of {n}"
    return " ".join(f"{x:.3f}" for x in times) + " s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="5 locations, two reference dates")
    args = ap.parse_args()
    locations, reps = (5, 2) if args.smoke else (3143, 3)
    with Cluster() as c, psycopg.connect(c.dsn(), autocommit=True) as db:
        db.execute("CREATE EXTENSION pg_enkf")
        db.execute("CREATE TABLE obs AS SELECT time, location, value FROM enkf.synthetic_surveillance(3, 3)")
        db.execute("CREATE TABLE locs AS SELECT DISTINCT location, population FROM enkf.synthetic_surveillance(3, 1)")
        db.execute("SELECT enkf.create_twin('c', 'obs', 'locs', members => 10)")
        db.execute("""CREATE TEMP TABLE src AS SELECT l::text AS location, m, h,
                        (SELECT array_agg(random() * 100) FROM generate_series(1, 23) WHERE g.l IS NOT NULL) AS v
                        FROM generate_series(1, %s) g(l), unnest(ARRAY['enkf', 'baseline']) m, generate_series(0, 3) h""", (locations,))
        db.execute("ANALYZE src")
        n = db.execute("SELECT count(*) FROM src").fetchone()[0]
        assert n == locations * 2 * 4, n
        print(f"{n} forecast rows of 23 quantiles, {reps} reference dates each:")
        print("  enkf.forecasts, upsert:         ", timed(
            db, f"INSERT INTO enkf.forecasts ({COLUMNS}) {rows('@REF')}{UPSERT}", reps, "enkf.forecasts", n))
        db.execute("TRUNCATE enkf.forecasts")
        print("  enkf.forecasts, delete + insert:", timed(
            db, f"DELETE FROM enkf.forecasts WHERE reference_date = @REF; INSERT INTO enkf.forecasts ({COLUMNS}) {rows('@REF')}",
            reps, "enkf.forecasts", n))
        for label, ddl in [
            ("same table, no foreign key:     ", "CREATE TABLE f (LIKE enkf.forecasts INCLUDING INDEXES)"),
            ("no foreign key, no index:       ", "CREATE TABLE f (LIKE enkf.forecasts)"),
        ]:
            db.execute(ddl)
            print(f"  {label}", timed(db, f"INSERT INTO f ({COLUMNS}) {rows('@REF', '1')}", reps, "f", n))
            db.execute("DROP TABLE f")


if __name__ == "__main__":
    main()
