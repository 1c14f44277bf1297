"""Times enkf.analyze through PostgreSQL against the same filters in numpy, in one run, on the
same inputs, and checks that both give the same analysis. Prints a markdown table.

    .venv/bin/python bench/analyze_vs_numpy.py            (after scripts/setup.sh and an install)
    .venv/bin/python bench/analyze_vs_numpy.py --smoke    (the test command's: two small cases, a
                                                           few repetitions, no pauses; checks the
                                                           answers and that every time was measured)

In-database time is per call, measured inside one statement that calls enkf.analyze `reps`
times over stored inputs (what a twin pays per location), and separately as the wall time of a
single statement from the client (which adds a loopback round trip). numpy time is per call on
in-memory arrays. Both are medians over repeated runs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy_filters as nf  # noqa: E402
from pgcluster import Cluster  # noqa: E402

CASES = [  # n, N, m, radius, periodic: as in extension/core/benches/filters.rs
    (40, 24, 40, 7.28, True),
    (1000, 100, 200, 10.0, False),
    (5000, 100, 2000, 10.0, False),
]
# --smoke: the smallest case, and a small one on a line rather than a ring.
SMOKE_CASES = [CASES[0], (200, 20, 50, 10.0, False)]
METHODS = ["etkf", "eakf", "letkf"]


def inputs(n, N, m, seed=1):
    rng = np.random.default_rng(seed)
    E = np.sin(np.arange(n) * 0.1)[:, None] + rng.standard_normal((n, N))
    idx = np.arange(m) * n // m
    y = np.sin(idx * 0.1) + 0.5 * rng.standard_normal(m)
    r = np.full(m, 0.25)
    return E, y, r, idx


def numpy_call(method, E, y, r, idx, radius, periodic):
    if method == "etkf":
        return nf.etkf(E, y, r, idx, 1.05)
    if method == "eakf":
        return nf.eakf(E, y, r, idx, 1.05, radius, periodic)
    return nf.letkf(E, y, r, idx, 1.05, radius, periodic)


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt(sec):
    return f"{sec * 1e3:.3f} ms" if sec < 1 else f"{sec:.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="two small cases, 3 timings of at most 20 calls, no pauses")
    args = ap.parse_args()
    # The cases, the pause after numpy work, the most timings in a median and calls in a batch.
    cases, pause, timings, batch = (SMOKE_CASES, 0.0, 3, 20) if args.smoke else (CASES, 1.0, 200, 2000)
    rows = []
    with Cluster() as c, psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_enkf")
        conn.execute("CREATE TABLE bench (id int PRIMARY KEY, e float8[], y float8[], r float8[], idx int4[])")
        for case_id, (n, N, m, radius, periodic) in enumerate(cases):
            E, y, r, idx = inputs(n, N, m)
            conn.execute(
                "INSERT INTO bench VALUES (%s, %s, %s, %s, %s)",
                (case_id, E.tolist(), y.tolist(), r.tolist(), (idx + 1).astype(int).tolist()),
            )
            for method in METHODS:
                loc = "NULL" if method == "etkf" else repr(radius)
                call = f"enkf.analyze(e, y, r, idx, '{method}', 1.05, 0.0, {loc}, {str(periodic).lower()})"
                # Same answer both ways (to rounding).
                sql_out = np.array(conn.execute(f"SELECT {call} FROM bench WHERE id = {case_id}").fetchone()[0])
                np_out = numpy_call(method, E, y, r, idx, radius, periodic)
                diff = float(np.max(np.abs(sql_out - np_out)))
                assert diff < 1e-8, f"{method} {n}: SQL and numpy differ by {diff}"
                time.sleep(pause)
                # Calls per measurement: enough for a few tens of milliseconds at least.
                q_one = f"SELECT cardinality({call}) FROM bench WHERE id = {case_id}"
                probe = median_time(lambda: conn.execute(q_one).fetchone(), 3)
                reps = max(1, min(batch, int(0.05 / max(probe, 1e-6))))
                # The database first: OpenBLAS's worker threads keep spinning for a while after a
                # numpy call and would take a core from the server being timed.
                q_batch = f"SELECT count({call}) FROM bench, generate_series(1, {reps}) WHERE id = {case_id}"
                t_sql = median_time(lambda: conn.execute(q_batch).fetchone(), min(5, timings)) / reps
                # numpy's BLAS uses every core; enkf.threads lets one call do the same.
                conn.execute("SET enkf.threads = 2")
                t_sql2 = median_time(lambda: conn.execute(q_batch).fetchone(), min(5, timings)) / reps
                conn.execute("RESET enkf.threads")
                t_one = median_time(lambda: conn.execute(q_one).fetchone(), max(3, min(reps, timings)))
                t_np = median_time(lambda: numpy_call(method, E, y, r, idx, radius, periodic), max(3, min(reps, timings)))
                assert all(math.isfinite(t) and t > 0 for t in (t_sql, t_sql2, t_one, t_np)), (t_sql, t_sql2, t_one, t_np)
                rows.append((method, n, N, m, t_sql, t_sql2, t_one, t_np, diff))
                print(f"{method:5} n={n:5} N={N:3} m={m:5}: SQL {fmt(t_sql)} per call, {fmt(t_sql2)} with 2 threads "
                      f"({fmt(t_one)} one statement), numpy {fmt(t_np)}, x{t_np / min(t_sql, t_sql2):.1f}", file=sys.stderr)
    print("| method | n | N | m | enkf.analyze per call | with enkf.threads = 2 | one statement from client | numpy | numpy / SQL (1 thread) | numpy / SQL (2 threads) | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, n, N, m, t_sql, t_sql2, t_one, t_np, diff in rows:
        print(f"| {method} | {n} | {N} | {m} | {fmt(t_sql)} | {fmt(t_sql2)} | {fmt(t_one)} | {fmt(t_np)} | {t_np / t_sql:.1f}x | {t_np / t_sql2:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
