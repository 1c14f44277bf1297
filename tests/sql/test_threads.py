"""enkf.threads: a backend's worker threads give the results of one thread, are started once
and kept, with PostgreSQL's signals blocked (so that cancel and timeouts reach the backend's
own thread), and leave statement_timeout working and nothing half-written."""

import os
import signal
import time

import numpy as np
import psycopg
import pytest

from support.data import checkpoints, make_data

# Threads and signals inside the backend: the same whatever the tables are (conftest.py).
pytestmark = pytest.mark.plain_only

# The signals PostgreSQL's backends act on.
BACKEND_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGALRM, signal.SIGHUP,
                   signal.SIGUSR1, signal.SIGUSR2]


def blocked(pid, tid):
    """The signals blocked in one thread of a process (from /proc)."""
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        mask = int(next(line.split()[1] for line in f if line.startswith("SigBlk:")), 16)
    return {s for s in BACKEND_SIGNALS if mask >> (s - 1) & 1}


def threads_of(pid):
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def test_analyze_on_two_threads_matches_one_and_workers_block_signals(conn):
    rng = np.random.default_rng(5)
    # Large enough for the ETKF to split its products and its eigensolver (N >= 64).
    n, members, m = 2000, 100, 300
    ens = np.sin(np.arange(n) * 0.1)[:, None] + rng.standard_normal((n, members))
    idx = np.arange(m) * n // m
    conn.execute("CREATE TABLE a (e float8[], y float8[], r float8[], idx int4[])")
    conn.execute("INSERT INTO a VALUES (%s, %s, %s, %s)",
                 (ens.tolist(), rng.standard_normal(m).tolist(), [0.5] * m, (idx + 1).tolist()))
    query = "SELECT enkf.analyze(e, y, r, idx, 'etkf', 1.05, 0.3) FROM a"
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    one = np.array(conn.execute(query).fetchone()[0])
    assert threads_of(pid) == [pid], "one thread must not start workers"
    conn.execute("SET enkf.threads = 2")
    two = np.array(conn.execute(query).fetchone()[0])
    # Only the order of some sums differs.
    assert np.max(np.abs(one - two)) <= 1e-10 * np.max(np.abs(one))
    workers = [t for t in threads_of(pid) if t != pid]
    assert len(workers) == 1
    for tid in workers:
        assert blocked(pid, tid) == set(BACKEND_SIGNALS), "a worker can receive a backend signal"
    # The backend's own thread got its signal mask back after starting the worker.
    assert not blocked(pid, pid) & {signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGUSR1}
    # Kept, not started again.
    for _ in range(3):
        conn.execute(query).fetchone()
    assert [t for t in threads_of(pid) if t != pid] == workers


def test_twin_results_do_not_depend_on_threads(conn):
    make_data(conn, locations=9, weeks=40, seed=4)
    forecasts = {}
    for name, threads in (("one", 1), ("two", 2)):
        conn.execute(f"SET enkf.threads = {threads}")
        conn.execute("SELECT enkf.create_twin(%s, 'obs', 'locs', members => 40)", (name,))
        conn.execute("SELECT * FROM enkf.assimilate(%s, '2023-06-24')", (name,)).fetchall()
        forecasts[name] = conn.execute(
            "SELECT location, horizon, quantile, value FROM enkf.forecast(%s) ORDER BY 1, 2, 3",
            (name,)).fetchall()
    assert len(forecasts["one"]) == 9 * 4 * 23
    assert forecasts["one"] == forecasts["two"]
    assert checkpoints(conn, "one") == checkpoints(conn, "two")


def test_statement_timeout_stops_a_threaded_assimilation(conn):
    make_data(conn, locations=400, weeks=156, seed=8)
    conn.execute("SET enkf.threads = 2")
    conn.execute("SELECT enkf.create_twin('big', 'obs', 'locs', members => 300)")
    conn.execute("SET statement_timeout = '300ms'")
    t0 = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT * FROM enkf.assimilate('big', '2025-09-20')")
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, f"took {elapsed:.2f}s to honour statement_timeout"
    conn.execute("RESET statement_timeout")
    # Nothing half-written, and the workers still serve the next call.
    assert checkpoints(conn, "big") == []
    done = conn.execute("SELECT locations FROM enkf.assimilate('big', '2022-12-31')").fetchone()
    assert done == (400,)


def test_pipelined_forecast_matches_one_thread_and_stops_on_timeout(conn):
    """With enkf.threads = 2 the forecast reads and writes batches of 200 locations while the
    worker computes the previous one: results in order and equal to one thread's, over many
    batches; a timeout in the middle stops it with nothing written and no worker left behind."""
    make_data(conn, locations=1100, weeks=30, seed=3)
    conn.execute("SELECT enkf.create_twin('p', 'obs', 'locs', members => 60)")
    conn.execute("SELECT * FROM enkf.assimilate('p')").fetchall()
    query = "SELECT location, reference_date, horizon, quantile, value FROM enkf.forecast('p')"
    stored = ("SELECT model, location, horizon, quantile_values FROM enkf.forecasts"
              " ORDER BY model, location, horizon")
    one = conn.execute(query).fetchall()
    one_stored = conn.execute(stored).fetchall()
    conn.execute("SET enkf.threads = 2")
    two = conn.execute(query).fetchall()
    assert len(one) == 1100 * 4 * 23
    assert two == one  # same values, and the rows in the same order (locations in byte order)
    assert conn.execute(stored).fetchall() == one_stored
    runs = conn.execute("SELECT count(*) FROM enkf.runs").fetchone()
    conn.execute("SET statement_timeout = '150ms'")
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT count(*) FROM enkf.forecast('p', 52)")
    conn.execute("RESET statement_timeout")
    assert conn.execute(stored).fetchall() == one_stored
    assert conn.execute("SELECT count(*) FROM enkf.runs").fetchone() == runs
    assert conn.execute(query).fetchall() == one
