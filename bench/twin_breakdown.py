"""Where one weekly cycle of the twin spends its time, from the DEBUG1 line each function reports,
at county scale: 3,143 synthetic locations, 100 members, 100 weeks of history, then three timed
weeks with enkf.threads = 2. enkf.assimilate reports its planning and its arithmetic ("compute");
enkf.forecast its reads, its arithmetic (every model and hub target, summed over the threads)
and its writes.

    .venv/bin/python bench/twin_breakdown.py [--locations N] [--threads T] [--explain] [--smoke]

With --explain, every statement the functions run that takes 10 ms or more is also printed with
its duration and the top of its plan (auto_explain, nested statements, from the server log).
--smoke is the test command's run: 5 locations, 20 members, 8 weeks of history, 2 timed weeks,
and with --explain the statements of 1 ms and up; it checks that each figure was reported and
parsed, and times nothing.

It starts its own throwaway cluster (never port 5432) and removes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]
import debug_lines  # noqa: E402
from pgcluster import Cluster  # noqa: E402

FIRST_WEEK = dt.date(2022, 10, 1)  # synthetic_surveillance's default first week end


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--locations", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        locations, members, history, timed_weeks, min_duration = args.locations or 5, 20, 8, 2, "1ms"
    else:
        locations, members, history, timed_weeks, min_duration = args.locations or 3143, 100, 100, 3, "10ms"
    with Cluster() as c, psycopg.connect(c.dsn(), autocommit=True) as db:
        db.execute("CREATE EXTENSION pg_enkf")
        db.execute("CREATE TABLE obs AS SELECT time, location, value"
                   f" FROM enkf.synthetic_surveillance({locations}, {history + timed_weeks + 1})")
        db.execute("CREATE INDEX ON obs (time)")
        db.execute("CREATE TABLE locs AS SELECT DISTINCT location, population"
                   f" FROM enkf.synthetic_surveillance({locations}, 1)")
        db.execute("ANALYZE obs; ANALYZE locs")
        db.execute(f"SET enkf.threads = {args.threads}")
        db.execute("SELECT enkf.create_twin('c', 'obs', 'locs', members => %s)", (members,))
        history_end = FIRST_WEEK + dt.timedelta(days=7 * history)
        db.execute("SELECT * FROM enkf.assimilate('c', %s)", (history_end,)).fetchone()
        db.execute("ANALYZE enkf.checkpoints; ANALYZE enkf.forecasts")
        messages: list[str] = []
        db.add_notice_handler(lambda d: messages.append(d.message_primary))
        db.execute("SET client_min_messages = debug1")
        if args.explain:
            db.execute("LOAD 'auto_explain'")
            db.execute(f"SET auto_explain.log_min_duration = '{min_duration}'; SET auto_explain.log_nested_statements = on;"
                       " SET auto_explain.log_analyze = on")
            log_start = c.logfile.stat().st_size
        print(f"{locations} locations, {members} members, enkf.threads = {args.threads}")
        for w in range(1, timed_weeks + 1):
            week = history_end + dt.timedelta(days=7 * w)
            messages.clear()
            t0 = time.perf_counter()
            db.execute("SELECT * FROM enkf.assimilate('c', %s)", (week,)).fetchone()
            t1 = time.perf_counter()
            db.execute("SELECT count(*) FROM enkf.forecast('c')").fetchone()
            t2 = time.perf_counter()
            a, f = debug_lines.assimilate(messages), debug_lines.forecast(messages)
            assert a.locations == locations and f.locations == locations, (a, f)
            print(f"{week}: assimilate {t1 - t0:.3f} s from the client, {a.seconds:.3f} s in the function"
                  f" (plan {a.plan:.3f} s, compute {a.compute:.3f} s, {a.counts} counts);"
                  f" forecast {t2 - t1:.3f} s from the client, {f.seconds:.3f} s in the function"
                  f" (read {f.read:.3f} s, compute {f.compute:.3f} s over the threads, write {f.write:.3f} s)")
        if args.explain:
            with open(c.logfile) as log:
                log.seek(log_start)
                lines = log.read().splitlines()
            plans = 0
            for i, line in enumerate(lines):
                if "duration:" in line and "plan:" in line:
                    top = lines[i + 1].strip() if i + 1 < len(lines) else ""
                    print(f"{line.split('duration:')[1].split('plan:')[0].strip():>12}  {top}")
                    plans += 1
            if args.smoke:
                assert plans > 0, "auto_explain logged no plan of the functions' statements"


if __name__ == "__main__":
    main()
