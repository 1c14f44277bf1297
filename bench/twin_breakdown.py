"""Where one weekly cycle of the twin spends its time, from the DEBUG1 line each function reports
(planning, compute, reads, writes), at county scale: 3,143 synthetic locations, 100 members,
100 weeks of history, then three timed weeks with enkf.threads = 2.

    .venv/bin/python bench/twin_breakdown.py [--locations N] [--threads T] [--explain]

With --explain, every statement the functions run that takes 10 ms or more is also printed with
its duration and the top of its plan (auto_explain, nested statements, from the server log).

It starts its own throwaway cluster (never port 5432) and removes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from pgcluster import Cluster  # noqa: E402

FIRST_WEEK = dt.date(2022, 10, 1)  # synthetic_surveillance's default first week end
HISTORY = 100


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--locations", type=int, default=3143)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--explain", action="store_true")
    args = ap.parse_args()
    with Cluster() as c, psycopg.connect(c.dsn(), autocommit=True) as db:
        db.execute("CREATE EXTENSION pg_enkf")
        db.execute("CREATE TABLE obs AS SELECT time, location, value"
                   f" FROM enkf.synthetic_surveillance({args.locations}, {HISTORY + 4})")
        db.execute("CREATE INDEX ON obs (time)")
        db.execute("CREATE TABLE locs AS SELECT DISTINCT location, population"
                   f" FROM enkf.synthetic_surveillance({args.locations}, 1)")
        db.execute("ANALYZE obs; ANALYZE locs")
        db.execute(f"SET enkf.threads = {args.threads}")
        db.execute("SELECT enkf.create_twin('c', 'obs', 'locs', members => 100)")
        history_end = FIRST_WEEK + dt.timedelta(days=7 * HISTORY)
        db.execute("SELECT * FROM enkf.assimilate('c', %s)", (history_end,)).fetchone()
        db.execute("ANALYZE enkf.checkpoints; ANALYZE enkf.forecasts")
        messages: list[str] = []
        db.add_notice_handler(lambda d: messages.append(d.message_primary))
        db.execute("SET client_min_messages = debug1")
        if args.explain:
            db.execute("LOAD 'auto_explain'")
            db.execute("SET auto_explain.log_min_duration = '10ms'; SET auto_explain.log_nested_statements = on;"
                       " SET auto_explain.log_analyze = on")
            log_start = c.logfile.stat().st_size
        for w in range(1, 4):
            week = history_end + dt.timedelta(days=7 * w)
            messages.clear()
            t0 = time.perf_counter()
            db.execute("SELECT * FROM enkf.assimilate('c', %s)", (week,)).fetchone()
            t1 = time.perf_counter()
            db.execute("SELECT count(*) FROM enkf.forecast('c')").fetchone()
            t2 = time.perf_counter()
            print(f"{week}: assimilate {t1 - t0:.3f} s, forecast {t2 - t1:.3f} s")
            for m in messages:
                if m.startswith("pg_enkf"):
                    print("   ", m)
        if args.explain:
            with open(c.logfile) as log:
                log.seek(log_start)
                lines = log.read().splitlines()
            for i, line in enumerate(lines):
                if "duration:" in line and "plan:" in line:
                    top = lines[i + 1].strip() if i + 1 < len(lines) else ""
                    print(f"{line.split('duration:')[1].split('plan:')[0].strip():>12}  {top}")


if __name__ == "__main__":
    main()
