"""One weekly cycle of the epidemic twin (assimilate one new week + a 4-week forecast), in the
database and done the usual way by a Python/numpy service, in the same run (issue 3).

    .venv/bin/python bench/twin_cycle.py            (~100 weeks of history, 5 timed weeks)
    .venv/bin/python bench/twin_cycle.py --quick    (20 weeks of history, 3 timed weeks)
    .venv/bin/python bench/twin_cycle.py --smoke    (the test command's: 5 locations x 20 members,
                                                     6 weeks of history, 2 timed weeks; checks
                                                     that every figure was computed, times nothing)

Scales: 53 locations x 300 members, 3,143 locations x 100 members, synthetic data from
enkf.synthetic_surveillance. It starts its own throwaway cluster (never port 5432) and removes it.

In the database: `SELECT * FROM enkf.assimilate(twin, week)` then
`SELECT count(*) FROM enkf.forecast(twin)`, timed from the client, with enkf.threads = 1 and 2
(one twin each, so that each assimilates every week for real).

The service: connects over TCP, pulls the week's observations, the observation history (for the
observation error and the baseline, and compared with the counts assimilated so far to find
revised ones, as the extension's revision check does) and the previous week's analysis
ensembles from enkf.checkpoints (of the threads = 1 twin, so both start from the same state), runs the same
model and filter vectorised in numpy, and writes checkpoints and forecasts with binary COPY into
svc_checkpoints / svc_forecasts (same columns as enkf.checkpoints / enkf.forecasts) in one
transaction. The service is written to be fast (binary transfer both ways, no per-member Python
loops) so that the ratio measures the architecture, not a naive client.

When TimescaleDB is installed, the in-database cycle also runs (threads = 1) in a second
database of the same cluster where TimescaleDB is created and the observation table is a
hypertable (4-week chunks) with the same rows: the time_bucket path, timed in the same weeks as
the plain table.

Last, the floor under any in-database cycle: what storing one week's checkpoints and forecasts
costs in plain SQL inside the server (storage_floor), plus the arithmetic pg_enkf reports in its
DEBUG1 lines (one thread), both spread perfectly over the 2 cores; the service's time over that
bounds the ratio an in-database design keeping these tables and doing this arithmetic could
reach on this machine. Both functions report their arithmetic ("compute"; the forecast's, of
every model and hub target, summed over its threads).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]
import debug_lines  # noqa: E402
from pgcluster import Cluster, preload, timescaledb_version  # noqa: E402

FIRST_WEEK = dt.date(2022, 10, 1)  # synthetic_surveillance's default first week end
LEVELS = np.array([0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                   0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99])
HORIZONS = 4
DRAWS = 10  # observation-noise draws per member in the forecast
BASELINE_PATHS = 2000  # as enkf_core::scoring::baseline_quantiles_all

# The twin's default configuration (extension/core/src/twin/config.rs, model/seirh.rs).
LATENT, INFECTIOUS, IMMUNITY = 2.0, 3.0, 540.0
IMPORTATION, AMPLITUDE, PEAK_DAY = 2e-7, 0.15, 350.0
BETA_BOUNDS, IHR_BOUNDS = (0.05, 2.0), (1e-5, 0.1)
NOISE_BETA, NOISE_IHR = 0.05, 0.02
INFLATION = 1.01
OBS_FLOOR, OBS_DIVISOR, OBS_WINDOW = 50.0, 20.0, 3
S, E, I, R, H, BETA, IHR = range(7)


# --- the model, vectorised over (locations, members) ----------------------------------------

def forcing(week_end: dt.date) -> np.ndarray:
    """Seasonal factor at the midpoint of each daily step of the week ending on week_end."""
    doy = (week_end - dt.timedelta(days=6)).timetuple().tm_yday
    days = doy + np.arange(7) + 0.5
    return 1.0 + AMPLITUDE * np.cos(2 * np.pi * (days - PEAK_DAY) / 365.25)


def constrain(x: np.ndarray, pop: np.ndarray) -> None:
    """Compartments >= 0 summing to the population, H >= 0, parameters in bounds (in place)."""
    c = x[:, S:R + 1]
    np.nan_to_num(c, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(c, 0.0, out=c)
    total = c.sum(axis=1)  # (L, N)
    empty = total <= 0
    scale = np.where(empty, 0.0, pop[:, None] / np.where(empty, 1.0, total))
    c *= scale[:, None, :]
    x[:, S][empty] = np.broadcast_to(pop[:, None], empty.shape)[empty]
    h = x[:, H]
    h[~np.isfinite(h) | (h < 0)] = 0.0
    for row, (lo, hi) in ((BETA, BETA_BOUNDS), (IHR, IHR_BOUNDS)):
        v = x[:, row]
        v[np.isnan(v)] = 0.5 * (lo + hi)
        np.clip(v, lo, hi, out=v)


def step(x: np.ndarray, pop: np.ndarray, week_end: dt.date, rng: np.random.Generator) -> None:
    """One week: 7 daily RK4 steps of the SEIR with waning and importation, H = ihr x new
    infectious over the week, then the parameters' random walk and the constraints."""
    sigma, gamma, omega = 1 / LATENT, 1 / INFECTIOUS, 1 / IMMUNITY
    inv_pop = (1.0 / pop)[:, None]
    y = [x[:, S].copy(), x[:, E].copy(), x[:, I].copy(), x[:, R].copy(), np.zeros_like(x[:, S])]

    def deriv(s, beta):
        i = np.maximum(s[2], 0)
        infection = (beta * i * inv_pop + IMPORTATION) * np.maximum(s[0], 0)
        onset = sigma * np.maximum(s[1], 0)
        recovery = gamma * i
        waning = omega * np.maximum(s[3], 0)
        return [waning - infection, infection - onset, onset - recovery, recovery - waning, onset]

    for f in forcing(week_end):
        beta = x[:, BETA] * f
        k1 = deriv(y, beta)
        k2 = deriv([a + 0.5 * b for a, b in zip(y, k1)], beta)
        k3 = deriv([a + 0.5 * b for a, b in zip(y, k2)], beta)
        k4 = deriv([a + b for a, b in zip(y, k3)], beta)
        y = [a + (b1 + 2 * b2 + 2 * b3 + b4) / 6 for a, b1, b2, b3, b4 in zip(y, k1, k2, k3, k4)]
    x[:, S], x[:, E], x[:, I], x[:, R] = y[0], y[1], y[2], y[3]
    x[:, H] = x[:, IHR] * np.maximum(y[4], 0)
    x[:, BETA] *= np.exp(NOISE_BETA * rng.standard_normal(x[:, BETA].shape))
    x[:, IHR] *= np.exp(NOISE_IHR * rng.standard_normal(x[:, IHR].shape))
    constrain(x, pop)


def obs_variance(recent_mean):
    return OBS_FLOOR + np.maximum(recent_mean, 0) ** 2 / OBS_DIVISOR


def eakf_update(x: np.ndarray, pop: np.ndarray, y: np.ndarray, recent_mean: np.ndarray) -> None:
    """Serial EAKF on each location's one observed count (state row H), in log space
    (log(1 + count), log(parameter)), with multiplicative inflation; NaN y = no update."""
    z = np.empty_like(x)
    z[:, :H + 1] = np.log1p(np.maximum(x[:, :H + 1], 0))
    z[:, BETA:] = np.log(np.maximum(x[:, BETA:], np.finfo(float).tiny))
    members = x.shape[2]
    mean = z.mean(axis=2)  # (L, 7)
    a = (z - mean[:, :, None]) * INFLATION
    ya = a[:, H].copy()  # (L, N)
    var_b = (ya * ya).sum(axis=1) / (members - 1)
    # Delta method: var(log(1 + y)) = var(y) / (1 + y)^2.
    r = obs_variance(recent_mean) / (1 + y) ** 2
    ok = np.isfinite(y) & (var_b > 0)
    var_b_safe = np.where(ok, var_b, 1.0)
    gain = var_b_safe / (var_b_safe + r)
    dmean = np.where(ok, gain * (np.log1p(np.where(ok, y, 0)) - mean[:, H]), 0.0)
    shrink = np.sqrt(r / (var_b_safe + r)) - 1
    g = np.einsum("lkn,ln->lk", a, ya) / (members - 1) / var_b_safe[:, None]
    g[~ok] = 0.0
    mean += g * dmean[:, None]
    a += (g * shrink[:, None])[:, :, None] * ya[:, None, :]
    z = mean[:, :, None] + a
    x[:, :H + 1] = np.expm1(z[:, :H + 1])
    x[:, BETA:] = np.exp(z[:, BETA:])
    constrain(x, pop)


def quantiles(samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Row-wise quantiles with linear interpolation between order statistics (numpy's default
    and enkf_core's). A full row sort: in numpy it beats np.partition with 46 kth values."""
    n = samples.shape[1]
    h = (n - 1) * levels
    lo = np.floor(h).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    part = np.sort(samples, axis=1)
    return part[:, lo] + (h - lo) * (part[:, hi] - part[:, lo])


def forecast(x: np.ndarray, pop: np.ndarray, last_week: dt.date, rng) -> np.ndarray:
    """(L, HORIZONS, 23) quantiles of weekly admissions: members propagated, each widened by
    DRAWS observation-error draws, truncated at 0."""
    x = x.copy()
    out = np.empty((x.shape[0], HORIZONS, len(LEVELS)))
    for h in range(HORIZONS):
        step(x, pop, last_week + dt.timedelta(days=7 * (h + 1)), rng)
        mean = x[:, H]  # (L, N)
        sd = np.sqrt(obs_variance(mean))
        draws = mean[:, :, None] + sd[:, :, None] * rng.standard_normal(mean.shape + (DRAWS,))
        out[:, h] = quantiles(np.maximum(draws, 0).reshape(x.shape[0], -1), LEVELS)
    return out


def baseline(histories: list[np.ndarray], rng) -> np.ndarray:
    """(L, HORIZONS, 23) FluSight-style baseline: median = last value, spread from the
    symmetrised week-to-week changes (exact one step ahead, BASELINE_PATHS bootstrap paths
    beyond), truncated at 0."""
    nloc = len(histories)
    out = np.zeros((nloc, HORIZONS, len(LEVELS)))
    lengths = {len(h) for h in histories}
    if len(lengths) == 1 and lengths.pop() >= 2:
        hist = np.stack(histories)
        d = np.diff(hist, axis=1)
        diffs = np.concatenate([d, -d], axis=1)
        last = hist[:, -1]
        groups = [(np.arange(nloc), diffs, last)]
    else:  # ragged histories: one location at a time
        groups = []
        for k, h in enumerate(histories):
            d = np.diff(h)
            diffs = np.concatenate([d, -d]) if len(d) else np.zeros(1)
            groups.append((np.array([k]), diffs[None, :], np.array([h[-1] if len(h) else np.nan])))
    mid = int(np.flatnonzero(LEVELS == 0.5)[0])
    for idx, diffs, last in groups:
        paths = np.repeat(last[:, None], BASELINE_PATHS, axis=1)
        nd = diffs.shape[1]
        for k in range(1, HORIZONS + 1):
            if k == 1:
                samples = last[:, None] + diffs
            else:
                for _ in range(2 if k == 2 else 1):
                    pick = rng.integers(0, nd, size=paths.shape)
                    paths += np.take_along_axis(diffs, pick, axis=1)
                samples = paths
            q = quantiles(samples, LEVELS)
            out[idx, k - 1] = np.maximum(q - q[:, mid:mid + 1] + last[:, None], 0)
    return out


# --- binary COPY and array transfer -----------------------------------------------------------

PG_EPOCH = dt.date(2000, 1, 1)
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
ELEM = np.dtype([("len", ">i4"), ("v", ">f8")])


def parse_array_send(buf: bytes, dims: int) -> np.ndarray:
    """Values of a float8[] from array_send (no NULLs), flat."""
    header = 12 + 8 * dims
    return np.frombuffer(buf, dtype=ELEM, offset=header)["v"].astype(np.float64)


def float8_arrays(values: np.ndarray, shape: tuple[int, ...]) -> list[bytes]:
    """Binary COPY fields (length prefix included) of one float8 array per row of `values`."""
    rows = values.shape[0]
    elems = np.empty((rows, int(np.prod(shape))), dtype=ELEM)
    elems["len"] = 8
    elems["v"] = values.reshape(rows, -1)
    head = struct.pack("!iii", len(shape), 0, 701) + b"".join(struct.pack("!ii", n, 1) for n in shape)
    prefix = struct.pack("!i", len(head) + elems.itemsize * elems.shape[1]) + head
    return [prefix + elems[k].tobytes() for k in range(rows)]


def f_int8(v): return struct.pack("!iq", 8, v)
def f_int4(v): return struct.pack("!ii", 4, v)
def f_date(d): return struct.pack("!ii", 4, (d - PG_EPOCH).days)
def f_text(s): b = s.encode(); return struct.pack("!i", len(b)) + b
def f_float8(v): return struct.pack("!i", -1) if v is None or np.isnan(v) else struct.pack("!id", 8, v)


# --- the service ------------------------------------------------------------------------------

def service_cycle(conn: psycopg.Connection, src_twin_id: int, svc_twin_id: int, week: dt.date,
                  run_id: int, seed: int, phases: dict) -> int:
    """Pull, compute, write one week in one transaction; returns the forecast rows written.
    Adds the seconds of each phase to `phases`."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    prev = week - dt.timedelta(days=7)
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT location::text, value::float8 FROM obs WHERE time = %s", (week,))
        new = {loc: (np.nan if v is None else v) for loc, v in cur.fetchall()}
        cur.execute(
            "SELECT location::text, array_send(array_agg(coalesce(value::float8, 'NaN') ORDER BY time))"
            " FROM obs WHERE time < %s GROUP BY location", (week,))
        past = {loc: parse_array_send(b, 1) for loc, b in cur.fetchall()}
        # The counts assimilated so far, to find revised ones (the extension's revision check).
        cur.execute(
            "SELECT location, array_send(array_agg(coalesce(observed, 'NaN') ORDER BY week_end))"
            " FROM enkf.checkpoints WHERE twin_id = %s AND week_end < %s GROUP BY location",
            (src_twin_id, week))
        assimilated = {loc: parse_array_send(b, 1) for loc, b in cur.fetchall()}
        cur.execute("SELECT location, array_send(ensemble) FROM enkf.checkpoints"
                    " WHERE twin_id = %s AND week_end = %s ORDER BY location", (src_twin_id, prev))
        rows = cur.fetchall()
    revised = [loc for loc, h in past.items()
               if not np.array_equal(h, assimilated.get(loc, np.empty(0)), equal_nan=True)]
    # A real service would re-run these from the changed week; the benchmark revises nothing.
    assert not revised, f"{len(revised)} locations with revised counts, e.g. {revised[:3]}"
    locations = [r[0] for r in rows]
    x = np.stack([parse_array_send(r[1], 2) for r in rows]).reshape(len(rows), 7, -1)
    # Population is implied by the compartments, which always sum to it.
    pop = x[:, S:R + 1, 0].sum(axis=1)
    y = np.array([new.get(loc, np.nan) for loc in locations])
    histories = []
    recent = np.empty(len(locations))
    for k, loc in enumerate(locations):
        h = past.get(loc, np.empty(0))
        h = h[np.isfinite(h)]
        if np.isfinite(y[k]):
            h = np.append(h, y[k])
        histories.append(h)
        recent[k] = h[-OBS_WINDOW:].mean() if len(h) else 0.0

    t1 = time.perf_counter()
    step(x, pop, week, rng)
    eakf_update(x, pop, y, recent)
    twin_q = forecast(x, pop, week, rng)
    base_q = baseline(histories, rng)
    t2 = time.perf_counter()

    reference = week + dt.timedelta(days=7)
    ens_fields = float8_arrays(x, (7, x.shape[2]))
    tw, rid, wk = f_int8(svc_twin_id), f_int8(run_id), f_date(week)
    ckpt = [COPY_HEADER]
    for k, loc in enumerate(locations):
        ckpt.append(b"".join([struct.pack("!h", 6), tw, f_text(loc), wk, rid, f_float8(y[k]), ens_fields[k]]))
    ckpt.append(struct.pack("!h", -1))
    levels = float8_arrays(LEVELS[None, :], (len(LEVELS),))[0]
    fc = [COPY_HEADER]
    ref = f_date(reference)
    for model, q in (("enkf", twin_q), ("baseline", base_q)):
        vals = float8_arrays(q.reshape(-1, len(LEVELS)), (len(LEVELS),))
        m = f_text(model)
        for k, loc in enumerate(locations):
            lf = f_text(loc)
            for h in range(HORIZONS):
                fc.append(b"".join([struct.pack("!h", 9), tw, ref, m, lf, f_int4(h),
                                    f_date(reference + dt.timedelta(days=7 * h)), rid, levels,
                                    vals[k * HORIZONS + h]]))
    fc.append(struct.pack("!h", -1))
    # Binary COPY into plain tables (svc_*): never into a hypertable, which kills the backend when
    # pgaudit is loaded (docs/operations.md, "TimescaleDB").
    with conn.cursor() as cur:
        with cur.copy("COPY svc_checkpoints (twin_id, location, week_end, run_id, observed, ensemble)"
                      " FROM STDIN (FORMAT binary)") as cp:
            cp.write(b"".join(ckpt))
        with cur.copy("COPY svc_forecasts (twin_id, reference_date, model, location, horizon,"
                      " target_end_date, run_id, quantile_levels, quantile_values)"
                      " FROM STDIN (FORMAT binary)") as cp:
            cp.write(b"".join(fc))
    conn.commit()
    t3 = time.perf_counter()
    for k, v in (("pull", t1 - t0), ("compute", t2 - t1), ("write", t3 - t2)):
        phases[k] = phases.get(k, 0.0) + v
    return 2 * len(locations) * HORIZONS


# --- the benchmark ----------------------------------------------------------------------------

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def hypertable_twin(dsn: str, label: str, nloc: int, members: int, weeks: int, last_history: dt.date) -> str:
    """The scale's data in a TimescaleDB database, the observation table a hypertable, and a
    twin (threads = 1) that has assimilated the history (untimed)."""
    name = f"{label}_hyper"
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS obs, locs")
        db.execute("CREATE TABLE obs AS SELECT time, location, value"
                   f" FROM enkf.synthetic_surveillance({nloc}, {weeks})")
        db.execute("SELECT create_hypertable('obs', 'time', chunk_time_interval => interval '28 days', migrate_data => true)")
        db.execute("CREATE TABLE locs AS SELECT DISTINCT location, population"
                   f" FROM enkf.synthetic_surveillance({nloc}, 1)")
        db.execute("ANALYZE obs; ANALYZE locs")
        db.execute("SET enkf.threads = 1")
        db.execute("SELECT enkf.create_twin(%s, 'obs', 'locs', members => %s)", (name, members))
        t, _ = timed(lambda: db.execute("SELECT * FROM enkf.assimilate(%s, %s)", (name, last_history)).fetchone())
        db.execute("ANALYZE enkf.checkpoints; ANALYZE enkf.forecasts")
        print(f"  {label}: history of {(last_history - FIRST_WEEK).days // 7 + 1} weeks on a hypertable, threads=1: {t:.1f} s (not timed)", flush=True)
    return name


def run_scale(dsn: str, label: str, nloc: int, members: int, history: int, timed_weeks: int,
              results: list, hyper_dsn: str | None = None, pause: float = 1.0) -> None:
    weeks = history + timed_weeks
    hyper = None
    if hyper_dsn:
        hyper = psycopg.connect(hyper_dsn, autocommit=True)
        hyper_name = hypertable_twin(hyper_dsn, label, nloc, members, weeks,
                                     FIRST_WEEK + dt.timedelta(days=7 * (history - 1)))
        hyper.execute("SET enkf.threads = 1")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS obs, locs, svc_checkpoints, svc_forecasts")
        db.execute("CREATE TABLE obs AS SELECT time, location, value"
                   f" FROM enkf.synthetic_surveillance({nloc}, {weeks})")
        db.execute("CREATE INDEX ON obs (time)")
        db.execute("CREATE TABLE locs AS SELECT DISTINCT location, population"
                   f" FROM enkf.synthetic_surveillance({nloc}, 1)")
        db.execute("ANALYZE obs; ANALYZE locs")
        db.execute("CREATE TABLE svc_checkpoints (LIKE enkf.checkpoints INCLUDING ALL)")
        db.execute("CREATE TABLE svc_forecasts (LIKE enkf.forecasts INCLUDING ALL)")
        last_history = FIRST_WEEK + dt.timedelta(days=7 * (history - 1))
        twins = {}
        for threads in (1, 2):
            name = f"{label}_t{threads}"
            db.execute(f"SET enkf.threads = {threads}")
            db.execute("SELECT enkf.create_twin(%s, 'obs', 'locs', members => %s)", (name, members))
            twins[threads] = db.execute("SELECT twin_id FROM enkf.twins WHERE name = %s", (name,)).fetchone()[0]
            t, _ = timed(lambda: db.execute("SELECT * FROM enkf.assimilate(%s, %s)", (name, last_history)).fetchone())
            print(f"  {label}: history of {history} weeks, threads={threads}: {t:.1f} s (not timed)", flush=True)
        db.execute("ANALYZE enkf.checkpoints; ANALYZE enkf.forecasts")
        svc = psycopg.connect(dsn)  # the service's own connection, over TCP like the others
        # The functions' DEBUG1 lines say how long they computed (see compute_seconds).
        messages: list[str] = []
        db.add_notice_handler(lambda d: messages.append(d.message_primary))
        db.execute("SET client_min_messages = debug1")
        try:
            times = {1: [], 2: [], "svc": [], "hyper": []}
            computing = []
            for w in range(timed_weeks):
                week = last_history + dt.timedelta(days=7 * (w + 1))
                for threads in (1, 2):
                    name = f"{label}_t{threads}"
                    db.execute(f"SET enkf.threads = {threads}")
                    messages.clear()
                    ta, _ = timed(lambda: db.execute("SELECT * FROM enkf.assimilate(%s, %s)", (name, week)).fetchone())
                    tf, n = timed(lambda: db.execute("SELECT count(*) FROM enkf.forecast(%s)", (name,)).fetchone()[0])
                    assert n == nloc * HORIZONS * len(LEVELS), n
                    times[threads].append(ta + tf)
                    if threads == 1:
                        computing.append(compute_seconds(messages, nloc))
                    print(f"  {label} {week} in-DB threads={threads}: assimilate {ta:.3f} s +"
                          f" forecast {tf:.3f} s = {ta + tf:.3f} s", flush=True)
                if hyper is not None:
                    ta, _ = timed(lambda: hyper.execute("SELECT * FROM enkf.assimilate(%s, %s)", (hyper_name, week)).fetchone())
                    tf, n = timed(lambda: hyper.execute("SELECT count(*) FROM enkf.forecast(%s)", (hyper_name,)).fetchone()[0])
                    assert n == nloc * HORIZONS * len(LEVELS), n
                    times["hyper"].append(ta + tf)
                    print(f"  {label} {week} in-DB on a hypertable, threads=1: assimilate {ta:.3f} s +"
                          f" forecast {tf:.3f} s = {ta + tf:.3f} s", flush=True)
                phases: dict = {}
                ts, n = timed(lambda: service_cycle(svc, twins[1], 1000 + twins[1], week, w + 1, 1000 + w, phases))
                assert n == 2 * nloc * HORIZONS
                times["svc"].append(ts)
                print(f"  {label} {week} numpy service: {ts:.3f} s (pull {phases['pull']:.3f} s,"
                      f" compute {phases['compute']:.3f} s, write {phases['write']:.3f} s)", flush=True)
                # OpenBLAS's worker threads spin for a while after numpy work: let them go idle
                # before the database is timed again.
                time.sleep(pause)
            agreement = check_service(db, twins[1], 1000 + twins[1])
            assert agreement.medians == nloc * timed_weeks, agreement
            # Same starting ensembles, different random draws: 1.4-2.2% apart in the runs of
            # docs/benchmarks.md, 9-11% with the forecast's current models (2026-12-07, --quick
            # and --smoke); far more means the two no longer do the same job.
            assert agreement.relative_difference < 0.25, agreement
            floor = storage_floor(db, twins[1], week)
        finally:
            svc.close()
            if hyper is not None:
                hyper.close()
        med = {k: statistics.median(v) if v else None for k, v in times.items()}
        arithmetic = statistics.median(computing)
        # Storing and computing spread perfectly over both cores: generous to the database
        # (the backend's SQL work runs on one thread), so the ratio below is an upper bound.
        bound = (sum(floor) + arithmetic) / 2
        for name, v in [*((f"cycle {k}", m) for k, m in med.items() if m is not None),
                        ("storing checkpoints", floor[0]), ("storing forecasts", floor[1])]:
            assert math.isfinite(v) and v > 0, (label, name, v)
        assert math.isfinite(arithmetic) and arithmetic >= 0, (label, arithmetic)
        assert (med["hyper"] is None) == (hyper_dsn is None), med
        print(f"  {label}: storing one week's results in plain SQL: checkpoints {floor[0]:.3f} s +"
              f" forecasts {floor[1]:.3f} s = {sum(floor):.3f} s; the arithmetic on one thread"
              f" {arithmetic:.3f} s; both over 2 cores {bound:.3f} s:"
              f" the service's median cycle is {med['svc'] / bound:.1f}x that", flush=True)
        results.append((label, nloc, members, med[1], med[2], med["svc"], sum(floor), arithmetic, bound, med["hyper"]))


def compute_seconds(messages: list[str], locations: int) -> float:
    """Seconds of arithmetic in one cycle with enkf.threads = 1 that pg_enkf reports in its
    DEBUG1 lines: assimilate's "compute" and the forecast's (every model and hub target)."""
    assim = debug_lines.assimilate(messages)
    fc = debug_lines.forecast(messages)
    assert assim.locations == locations and fc.locations == locations, (assim, fc)
    return assim.compute + fc.compute


def storage_floor(db, twin_id: int, week: dt.date, reps: int = 3) -> tuple[float, float]:
    """Seconds (median of `reps`) that PostgreSQL takes, with no client and no pg_enkf code
    involved, to read the twin's analyses of one week and store them as a new week, and to
    store one week's forecast rows: `INSERT ... SELECT` from enkf.checkpoints / enkf.forecasts
    into tables with the same columns, keys and storage (no foreign key, like the service's).
    Any in-database cycle that keeps these results costs at least this, so the service's time
    over it bounds the ratio any in-database design could reach."""
    db.execute("DROP TABLE IF EXISTS floor_checkpoints, floor_forecasts")
    db.execute("CREATE TABLE floor_checkpoints (LIKE enkf.checkpoints INCLUDING ALL)")
    db.execute("CREATE TABLE floor_forecasts (LIKE enkf.forecasts INCLUDING ALL)")
    reference = week + dt.timedelta(days=7)
    ckpt, fc = [], []
    for k in range(1, reps + 1):
        t, _ = timed(lambda: db.execute(
            "INSERT INTO floor_checkpoints SELECT twin_id, location, week_end + 7 * %s, run_id, observed,"
            " ensemble, rows_print, source_rows FROM enkf.checkpoints WHERE twin_id = %s AND week_end = %s",
            (k, twin_id, week)))
        ckpt.append(t)
        t, _ = timed(lambda: db.execute(
            "INSERT INTO floor_forecasts SELECT twin_id, reference_date + 7 * %s, model, location, horizon,"
            " target_end_date + 7 * %s, run_id, quantile_levels, quantile_values FROM enkf.forecasts"
            " WHERE twin_id = %s AND reference_date = %s", (k, k, twin_id, reference)))
        fc.append(t)
    rows = db.execute("SELECT (SELECT count(*) FROM floor_checkpoints), (SELECT count(*) FROM floor_forecasts)").fetchone()
    assert rows[0] > 0 and rows[1] > 0, rows
    db.execute("DROP TABLE floor_checkpoints, floor_forecasts")
    return statistics.median(ckpt), statistics.median(fc)


@dataclass
class Agreement:
    medians: int
    relative_difference: float


def check_service(db, twin_id: int, svc_twin_id: int) -> Agreement:
    """Sanity check that the service does the twin's job: its forecast medians track the
    in-database ones (same starting ensembles, different random draws)."""
    rows = db.execute(
        "SELECT a.quantile_values[12], b.quantile_values[12] FROM enkf.forecasts a"
        " JOIN svc_forecasts b USING (reference_date, model, location, horizon)"
        " WHERE a.twin_id = %s AND b.twin_id = %s AND a.model = 'enkf' AND a.horizon = 0",
        (twin_id, svc_twin_id)).fetchall()
    a, b = np.array(rows).T
    rel = np.median(np.abs(a - b) / np.maximum(np.abs(a), 10))
    print(f"  check: {len(rows)} horizon-0 medians, in-DB vs service, median relative difference {rel:.3f}")
    return Agreement(medians=len(rows), relative_difference=float(rel))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 weeks of history and 3 timed weeks")
    ap.add_argument("--smoke", action="store_true",
                    help="the test command's run: 5 locations x 20 members, 6 weeks of history, 2 timed weeks")
    args = ap.parse_args()
    history, timed_weeks = (6, 2) if args.smoke else (20, 3) if args.quick else (101, 5)
    scales = [("smoke", 5, 20)] if args.smoke else [("states", 53, 300), ("counties", 3143, 100)]
    conf = {"shared_buffers": "'512MB'", "work_mem": "'64MB'", "max_wal_size": "'4GB'"}
    timescaledb = timescaledb_version()
    cluster = Cluster(conf=preload(conf, "timescaledb") if timescaledb else conf)
    results: list = []
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as db:
            db.execute("CREATE EXTENSION pg_enkf")
            if timescaledb:
                db.execute("CREATE DATABASE hyper")
        hyper_dsn = None
        if timescaledb:
            hyper_dsn = cluster.dsn("hyper")
            with psycopg.connect(hyper_dsn, autocommit=True) as db:
                db.execute("CREATE EXTENSION timescaledb")
                db.execute("CREATE EXTENSION pg_enkf")
        else:
            print("TimescaleDB is not installed: the cycle on a hypertable is not timed", flush=True)
        for label, nloc, members in scales:
            run_scale(cluster.dsn(), label, nloc, members, history, timed_weeks, results, hyper_dsn,
                      pause=0.0 if args.smoke else 1.0)
    finally:
        cluster.stop()
    print()
    print(f"One weekly cycle (assimilate 1 week + {HORIZONS}-week forecast), median of {timed_weeks}"
          f" weeks after {history} weeks of history")
    print()
    print("| scale | members | in-DB threads=1 | in-DB threads=2 | numpy service | service / in-DB (1 thread) | service / in-DB (2 threads) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, nloc, members, t1, t2, ts, *_ in results:
        print(f"| {nloc:,} locations | {members} | {t1:.3f} s | {t2:.3f} s | {ts:.3f} s"
              f" | {ts / t1:.1f}x | {ts / t2:.1f}x |")
    print()
    print("The most an in-database cycle could gain: storing the results (plain SQL) plus the arithmetic"
          " pg_enkf reports (assimilate's and the forecast's, one thread), spread perfectly over 2 cores")
    print()
    print("| scale | storing the results | the arithmetic, one thread | both over 2 cores | service / that |")
    print("|---|---:|---:|---:|---:|")
    for label, nloc, members, t1, t2, ts, floor, arithmetic, bound, _ in results:
        print(f"| {nloc:,} locations | {floor:.3f} s | {arithmetic:.3f} s | {bound:.3f} s | {ts / bound:.1f}x |")
    if timescaledb:
        print()
        print(f"The observations in a TimescaleDB {timescaledb} hypertable (time_bucket) beside a plain table, in-DB threads=1, same weeks")
        print()
        print("| scale | members | plain table | hypertable | hypertable / plain |")
        print("|---|---:|---:|---:|---:|")
        for label, nloc, members, t1, t2, ts, floor, arithmetic, bound, th in results:
            print(f"| {nloc:,} locations | {members} | {t1:.3f} s | {th:.3f} s | {th / t1:.2f}x |")


if __name__ == "__main__":
    main()
