"""Random arguments for every pg_enkf function: each call either succeeds with a well-formed
result or raises an ERROR with one of the documented SQLSTATEs. Never an internal error
(XX000, which is what a Rust panic becomes), never a lost connection, never a half-written run.

The arguments come from seeded generators (same cases on every run) that mix valid values with
the edges: empty arrays and arrays of other dimensions, non-1 lower bounds, NULL elements, NaN,
infinities, values near the float8 and date limits, extreme sizes, random configurations.
"""

from __future__ import annotations

import json
import math
import random
import time

import psycopg
import pytest

from support.data import hypertable

# What a bad argument may raise (docs/api.md): null value, invalid parameter, array subscript,
# numeric out of range, datetime out of range, program limit, undefined object/table/column,
# datatype mismatch, unique violation, prerequisite state, foreign key (unknown location),
# insufficient privilege, statement timeout.
ALLOWED = {
    "22004", "22023", "2202E", "22003", "22008", "54000", "42704", "42P01", "42703", "42804",
    "23505", "23503", "55000", "42501", "57014",
}
# True prints every refusal (SQLSTATE, message, arguments) when run with -s.
DEBUG = False
FLOATS = [
    0.0, 1.0, -1.0, 0.5, 2.5, 1e-300, -1e-300, 5e-324, 1e300, -1e300, 1.7976931348623157e308,
    float("nan"), float("inf"), float("-inf"), 100.0, 1e6,
]


def pick_float(rng: random.Random) -> float | None:
    r = rng.random()
    if r < 0.55:
        return rng.gauss(0, 1) * rng.choice([1, 10, 1000])
    if r < 0.97:
        return rng.choice(FLOATS)
    return None


def lit(v: float | None) -> str:
    if v is None:
        return "NULL"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def array_text(rows: list[list[float | None]], lower: tuple[int, int] | None = None) -> str:
    body = "{" + ",".join("{" + ",".join(lit(v) for v in row) + "}" for row in rows) + "}"
    if lower is not None and rows and rows[0]:
        (a, b) = lower
        body = f"[{a}:{a + len(rows) - 1}][{b}:{b + len(rows[0]) - 1}]={body}"
    return body


def vector_text(vals: list, lower: int | None = None) -> str:
    body = "{" + ",".join("NULL" if v is None else (lit(v) if isinstance(v, float) else str(v)) for v in vals) + "}"
    if lower is not None and vals:
        body = f"[{lower}:{lower + len(vals) - 1}]={body}"
    return body


def analyze_case(rng: random.Random) -> tuple[str, list]:
    """A valid call, then (most of the time) one argument replaced by an edge value."""
    n = rng.choice([1, 2, 3, 5, 17, 40])
    members = rng.choice([2, 3, 7, 20])
    rows = [[rng.gauss(0, 1) * 10 for _ in range(members)] for _ in range(n)]
    m = rng.randint(1, n + 1)
    args = {
        "ensemble": array_text(rows, rng.choice([None, None, (0, 1), (-3, 5)])),
        "observations": vector_text([rng.gauss(0, 10) for _ in range(m)], rng.choice([None, None, 0])),
        "obs_variance": vector_text([rng.choice([1.0, 0.25, 4.0, 1e-6, 1e6]) for _ in range(m)]),
        "obs_index": vector_text([rng.randint(1, n) for _ in range(m)]),
        "method": rng.choice(["enkf", "etkf", "eakf", "letkf"]),
        "inflation": rng.choice([1.0, 1.05, 2.0]),
        "rtps": rng.choice([0.0, 0.5, 1.0]),
        "loc_radius": rng.choice([None, 2.0, 1e-3, 1e6]),
        "periodic": rng.choice([False, True]),
        "seed": rng.choice([0, 1, -1, 2**63 - 1, -(2**63)]),
    }
    mutate = rng.choice(list(args) + ["values"] * 3 + [None] * 4)
    if mutate == "values":  # edge values inside an otherwise valid ensemble
        for row in rows:
            for j in range(members):
                if rng.random() < 0.2:
                    row[j] = pick_float(rng)
        args["ensemble"] = array_text(rows)
    elif mutate == "ensemble":
        k = rng.randint(0, 5)
        args["ensemble"] = rng.choice([
            "{}", "{1,2,3}", "{{{1,2},{3,4}}}", vector_text([1.0, 2.0], 0),
            array_text([[1.0]] * n), array_text([[pick_float(rng)] * members for _ in range(n)]),
        ][k:k + 1])
    elif mutate == "observations":
        args["observations"] = vector_text([pick_float(rng) for _ in range(rng.choice([0, m, m + 1]))])
    elif mutate == "obs_variance":
        args["obs_variance"] = vector_text([rng.choice([0.0, -1.0, 5e-324, 1e300, float("nan"), float("inf"), None, 1.0])
                                            for _ in range(rng.choice([0, m, m + 1]))])
    elif mutate == "obs_index":
        args["obs_index"] = vector_text([rng.choice([0, -1, n + 1, 2**31 - 1, -(2**31), None, 1])
                                         for _ in range(rng.choice([m, m + 1]))])
    elif mutate == "method":
        args["method"] = rng.choice(["ETKF", "", "magic", " etkf", None])
    elif mutate == "inflation":
        args["inflation"] = rng.choice([0.99, 0.0, -1.0, 1e300, float("nan"), float("inf"), None])
    elif mutate == "rtps":
        args["rtps"] = rng.choice([-0.1, 1.1, float("nan"), float("inf"), None])
    elif mutate == "loc_radius":
        args["loc_radius"] = rng.choice([0.0, -1.0, 5e-324, 1e300, float("nan"), float("inf")])
    elif mutate == "periodic":
        args["periodic"] = None
    elif mutate == "seed":
        args["seed"] = None
    sql = ("SELECT enkf.analyze(%s::float8[], %s::float8[], %s::float8[], %s::int4[],"
           " %s, %s, %s, %s, %s, %s)")
    return sql, list(args.values())


def call(conn, sql: str, params=None):
    """(rows, None) on success, (None, sqlstate) on error; fails on a forbidden SQLSTATE."""
    try:
        return conn.execute(sql, params).fetchall(), None
    except psycopg.OperationalError as e:
        # A lost connection is a crash of the backend: never acceptable.
        if conn.closed or conn.broken:
            pytest.fail(f"connection lost: {sql} {params}: {e}")
        state = e.sqlstate
    except psycopg.Error as e:
        state = e.sqlstate
        if DEBUG:
            print(state, e.diag.message_primary[:150], params)
        assert state in ALLOWED, f"{state} {e.diag.message_primary!r} for {sql} {params}"
        assert e.diag.message_primary
        # pg_enkf's own refusals (reported from its function "pg_enkf") always carry a HINT.
        if e.diag.source_function == "pg_enkf":
            assert e.diag.message_hint, f"no hint: {e.diag.message_primary!r} for {params}"
    assert state in ALLOWED, f"{state} for {sql} {params}"
    return None, state


@pytest.mark.plain_only  # no table involved
def test_analyze_random_arguments(conn):
    rng = random.Random(20261202)
    conn.execute("SET statement_timeout = '5s'")
    outcomes: dict[str, int] = {}
    for _ in range(1500):
        sql, params = analyze_case(rng)
        rows, state = call(conn, sql, params)
        outcomes[state or "ok"] = outcomes.get(state or "ok", 0) + 1
        if rows is None:
            continue
        out = rows[0][0]
        if out is None:
            continue  # STRICT-like: a NULL argument may give NULL
        # The analysis has the ensemble's shape and only finite values.
        dims = conn.execute("SELECT array_dims(%s::float8[])", (params[0],)).fetchone()[0]
        got = conn.execute("SELECT array_dims(%s::float8[])", (out,)).fetchone()[0]
        assert got is not None and dims is not None
        n_in = [int(b) - int(a) + 1 for a, b in (p.split(":") for p in dims.strip("[]").split("]["))]
        n_out = [int(b) - int(a) + 1 for a, b in (p.split(":") for p in got.strip("[]").split("]["))]
        assert n_in == n_out, (params, dims, got)
        assert all(math.isfinite(v) for row in out for v in row), params
    # The generator reaches both sides: successes and each family of refusals.
    assert outcomes.get("ok", 0) > 100, outcomes
    for state in ("22023", "2202E", "22004"):
        assert outcomes.get(state, 0) > 10, outcomes
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.plain_only  # no table involved
def test_synthetic_surveillance_random_arguments(conn):
    rng = random.Random(7)
    conn.execute("SET statement_timeout = '5s'")
    for _ in range(150):
        locations = rng.choice([-1, 0, 1, 3, 100_000, 100_001, 2**31 - 1, None])
        weeks = rng.choice([-5, 0, 1, 2, 52, 5000, 5001, None])
        first = rng.choice(["2022-10-01", "4713-11-25 BC", "5874897-12-25", "5874000-01-01",
                            "infinity", "-infinity", "2024-02-29", None])
        seed = rng.choice([0, 1, -(2**63), 2**63 - 1, None])
        config = rng.choice(["{}", '{"observation_error": {"floor": 0}}', '{"dynamics": {"latent_days": 1e300}}',
                             '{"dynamics": {"seasonal_amplitude": 5}}', '{"seed": "x"}', "[]", "null", None])
        # Only a few rows are fetched: the function streams, so large sizes cost little.
        rows, state = call(
            conn,
            "SELECT time::text, location, value, population FROM"
            " enkf.synthetic_surveillance(%s, %s, %s::date, %s, %s::jsonb) LIMIT 200",
            (locations, weeks, first, seed, config))
        for t, loc, value, pop in rows or []:
            assert loc and pop > 0
            assert value is None or (math.isfinite(value) and value >= 0)
            assert t is not None
        if rows:
            # Every date is one PostgreSQL can read back (none past 5874897-12-31).
            conn.execute("SELECT count(t::date) FROM unnest(%s::text[]) t", ([r[0] for r in rows],))


def random_config(rng: random.Random) -> str:
    cfg: dict = {}
    choices = {
        ("filter", "method"): ["eakf", "etkf", "enkf", "letkf", "x"],
        ("filter", "inflation"): [1.0, 1.2, 0.5, 1e300],
        ("filter", "rtps"): [0.0, 0.5, 2.0],
        ("filter", "space"): ["log", "linear", "exp"],
        ("observation_error", "floor"): [50, 1e-300, 0, -1, 1e300],
        ("observation_error", "divisor"): [20, 0, 1e-300],
        ("observation_error", "window"): [3, 0, 1000, -1],
        ("priors", "r0"): [[1.2, 1.8], [1.8, 1.2], [0, 0], [1e300, 1e300]],
        ("priors", "ihr"): [[0.001, 0.01], [0.5, 0.1], [0, 1]],
        ("bounds", "beta"): [[0.05, 2.0], [2.0, 0.05], [0, 1e300]],
        ("dynamics", "infectious_days"): [3, 0, 1e-300, 1e300],
        ("dynamics", "importation"): [2e-7, 0, 1, -1],
        ("process_noise", "beta"): [0.05, 0, 10, -1],
        ("forecast", "horizons"): [4, 0, 52, 53],
        ("forecast", "draws_per_member"): [10, 0, 1, 100000],
        ("forecast", "noise_scale"): [1, 0, -1, 1e300],
        ("checkpoints", "keep_weeks"): [2, 0, 1000],
        ("revisions", "lookback_weeks"): [1, 0, 5],
        ("week_ends_on", None): ["saturday", "sunday", "noday"],
        ("seed", None): [1, -(2**63), "7"],
    }
    for (a, b), vals in rng.sample(sorted(choices.items(), key=str), rng.randint(1, 3)):
        v = rng.choice(vals)
        if b is None:
            cfg[a] = v
        else:
            cfg.setdefault(a, {})[b] = v
    return json.dumps(cfg)


def counts(conn) -> tuple:
    return conn.execute(
        "SELECT (SELECT count(*) FROM enkf.checkpoints), (SELECT count(*) FROM enkf.forecasts),"
        " (SELECT count(*) FROM enkf.runs)").fetchone()


def test_twin_random_tables_and_arguments(conn):
    """Random observation tables (edge values, duplicates, infinite dates, odd types) and
    random configurations through create_twin, assimilate, forecast and score. A failed
    call changes nothing in the twin's tables."""
    rng = random.Random(99)
    conn.execute("SET statement_timeout = '20s'")
    value_types = ["float8", "int4", "numeric", "int8", "real"]
    time_types = ["date", "timestamptz", "timestamp"]
    successes = 0
    outcomes: dict[str, int] = {}
    for case in range(150):
        vt, tt = rng.choice(value_types), rng.choice(time_types)
        conn.execute("DROP TABLE IF EXISTS f_obs, f_locs")
        conn.execute(f"CREATE TABLE f_obs (time {tt}, location text, value {vt})")
        # A hypertable on TimescaleDB (whose time column is then NOT NULL).
        on_hypertable = hypertable(conn, "f_obs")
        conn.execute("CREATE TABLE f_locs (location text, population numeric)")
        nloc, weeks = rng.randint(1, 4), rng.randint(1, 30)
        locs = [f"L{k}" for k in range(nloc)]
        for loc in locs:
            pop = rng.choice([1e6] * 40 + [500, 1e10, 0, -5, 1e300, None, "NaN"])
            conn.execute("INSERT INTO f_locs VALUES (%s, %s::numeric)", (loc, pop))
        rows = []
        for w in range(weeks):
            for loc in locs:
                if rng.random() < 0.1:
                    continue
                v: object = max(0, round(rng.gauss(200, 100)))
                if rng.random() < 0.02:
                    v = rng.choice([None, -3, 0, 2**31 - 1]
                                   + (["1e12", "NaN", "Infinity"] if vt in ("float8", "real", "numeric") else []))
                rows.append(("2023-10-07", w, loc, v))
        if rng.random() < 0.05 and rows:
            rows.append(rows[0])  # a duplicate (time, location)
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO f_obs VALUES ((%s::date + 7 * %s)::{tt}, %s, %s::{vt})", rows)
        if rng.random() < 0.05:
            conn.execute(f"INSERT INTO f_obs VALUES ('infinity'::{tt}, 'L0', 5)")
        if rng.random() < 0.05 and not on_hypertable:
            conn.execute("INSERT INTO f_obs VALUES (NULL, 'L0', 5)")
        name = rng.choice([f"fz{case}"] * 8 + ["", None, "x" * 70, 'q"; DROP TABLE f_obs; --'])
        members = rng.choice([2, 10, 20] * 4 + [1, 0, -1, 100001, None])
        config = random_config(rng) if rng.random() < 0.4 else "{}"
        _, state = call(conn, "SELECT enkf.create_twin(%s, 'f_obs', 'f_locs', members => %s, config => %s::jsonb)",
                        (name, members, config))
        outcomes["create " + (state or "ok")] = outcomes.get("create " + (state or "ok"), 0) + 1
        if state is not None:
            continue
        through = rng.choice(["2024-12-31", "2023-11-01", "2023-12-01", "2000-01-01", "infinity",
                              "-infinity", "294276-12-31", None])
        for step in range(2):
            before = counts(conn)
            if step == 0:
                _, state = call(conn, "SELECT * FROM enkf.assimilate(%s, %s::timestamptz)", (name, through))
            else:  # then the rest of the table, incrementally
                _, state = call(conn, "SELECT * FROM enkf.assimilate(%s)", (name,))
            outcomes["assimilate " + (state or "ok")] = outcomes.get("assimilate " + (state or "ok"), 0) + 1
            if state is not None:
                assert counts(conn) == before, f"a failed assimilate wrote rows: {config}"
                break
            successes += 1
            horizons = rng.choice([1, 4, 52, 0, 53, None])
            levels = rng.choice([None, "{0.5}", "{0.025,0.5,0.975}", "{0.5,0.1}", "{}", "{1e-300,0.9999999}", "{NaN}"])
            before = counts(conn)
            fc, state = call(conn, "SELECT * FROM enkf.forecast(%s, %s, coalesce(%s::float8[],"
                             " '{0.01,0.025,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95,0.975,0.99}'))",
                             (name, horizons, levels))
            if state is not None:
                assert counts(conn) == before, f"a failed forecast wrote rows: {config}"
            for row in fc or []:
                assert row[5] is not None and math.isfinite(row[5]) and row[5] >= 0, (row, config, members, vt, tt, conn.execute("SELECT array_agg(population) FROM f_locs").fetchone(), conn.execute("SELECT max(value), min(value), count(*) FROM f_obs").fetchone())
            call(conn, "SELECT * FROM enkf.score(%s)", (name,))
        call(conn, "SELECT enkf.drop_twin(%s)", (name,))
    print(outcomes)
    assert successes > 40, outcomes
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.plain_only  # no table involved
def test_size_attacks(conn):
    """Random sizes for every dimension a caller controls, built cheaply with array_fill: each
    call succeeds, is refused with 54000 before it allocates, or is cut short by the statement
    timeout; none takes the backend down, and none refused for size took long to refuse."""
    rng = random.Random(54000)
    conn.execute("SET statement_timeout = '5s'")
    started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    outcomes: dict[str, int] = {}
    for _ in range(60):
        members = int(10 ** rng.uniform(0.3, 6))
        state_dim = max(1, min(int(10 ** rng.uniform(0, 6)), 20_000_000 // max(members, 1)))
        m = int(10 ** rng.uniform(0, 6))
        method = rng.choice(["etkf", "enkf", "eakf", "letkf"])
        radius = rng.choice([None, 1.0, 50.0])
        sql = ("SELECT array_length(enkf.analyze(array_fill(1.0::float8, ARRAY[%s, %s]), array_fill(0.5::float8, ARRAY[%s]),"
               " array_fill(1.0::float8, ARRAY[%s]), array_fill(1, ARRAY[%s]), %s, loc_radius => %s), 2)")
        t0 = time.monotonic()
        rows, state = call(conn, sql, (state_dim, members, m, m, m, method, radius))
        took = time.monotonic() - t0
        outcomes[state or "ok"] = outcomes.get(state or "ok", 0) + 1
        if state == "54000":
            assert took < 2.0, (state_dim, members, m, method, radius, took)
        if rows:
            assert rows[0][0] == members
    for _ in range(20):
        locations, weeks = rng.choice([1, 10, 3143, 100_000]), rng.choice([1, 52, 5000])
        rows, state = call(conn, "SELECT count(*) FROM enkf.synthetic_surveillance(%s, %s)", (locations, weeks))
        outcomes[state or "ok"] = outcomes.get(state or "ok", 0) + 1
    assert outcomes.get("54000", 0) > 10 and outcomes.get("ok", 0) > 5, outcomes
    assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started
