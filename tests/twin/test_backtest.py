"""Tables of versions and the real-time backtest (enkf.backtest), on synthetic data whose
backfill is known: each week is published as it ends and revised in each of the next weeks
(enkf.synthetic_surveillance(versions => k)). The backtest must use no version published after
its as-of, equal assimilate and forecast run by hand at each as-of, and refuse bad input with a
specific SQLSTATE without writing anything."""

from __future__ import annotations

import datetime as dt
import math
import re

import psycopg
import pytest

from support.errors import sqlstate


def make_versions(conn, locations=4, weeks=60, versions=3, seed=3, table="obs", loc_table="locs"):
    conn.execute(
        f"""CREATE TABLE {table} AS SELECT time, location, value, as_of
              FROM enkf.synthetic_surveillance({locations}, {weeks}, '2022-10-01', {seed}, versions => {versions})"""
    )
    conn.execute(
        f"""CREATE TABLE {loc_table} AS SELECT DISTINCT location, population
              FROM enkf.synthetic_surveillance({locations}, 1, '2022-10-01', {seed})"""
    )


def written(conn):
    return conn.execute(
        "SELECT (SELECT count(*) FROM enkf.twins), (SELECT count(*) FROM enkf.runs),"
        " (SELECT count(*) FROM enkf.checkpoints), (SELECT count(*) FROM enkf.forecasts)"
    ).fetchone()


def forecasts(conn, twin):
    return conn.execute(
        """SELECT f.model, f.location, f.reference_date, f.horizon, f.quantile_values FROM enkf.forecasts f
             JOIN enkf.twins t USING (twin_id) WHERE t.name = %s ORDER BY 1, 2, 3, 4""",
        (twin,),
    ).fetchall()


def test_synthetic_versions_follow_the_known_backfill(conn):
    rows = conn.execute(
        """SELECT time, location, array_agg(value ORDER BY as_of), array_agg(as_of - time ORDER BY as_of)
             FROM enkf.synthetic_surveillance(2, 8, '2023-01-07', 5, versions => 4) GROUP BY 1, 2"""
    ).fetchall()
    final = dict(((r[0], r[1]), r[2]) for r in conn.execute(
        "SELECT time, location, value FROM enkf.synthetic_surveillance(2, 8, '2023-01-07', 5)").fetchall())
    assert len(rows) == 16
    for time, loc, values, lags in rows:
        assert lags == [0, 7, 14, 21]
        f = final[(time, loc)]
        # Rounded half away from zero, as Rust's f64::round.
        assert values == [math.floor(f * s + 0.5) for s in (0.7, 0.85, 0.925)] + [f]


def test_as_of_reads_only_what_was_published(conn):
    make_versions(conn)
    conn.execute("SELECT enkf.create_twin('v', 'obs', 'locs', members => 30, as_of_column => 'as_of')")
    # The same data as it stood on 2023-05-06, as a plain table.
    conn.execute("""CREATE TABLE snapshot AS SELECT DISTINCT ON (location, time) time, location, value
                      FROM obs WHERE as_of <= '2023-05-06' ORDER BY location, time, as_of DESC""")
    conn.execute("SELECT enkf.create_twin('s', 'snapshot', 'locs', members => 30)")
    run = conn.execute("SELECT * FROM enkf.assimilate('v', '2023-05-06', as_of => '2023-05-06')").fetchone()
    conn.execute("SELECT * FROM enkf.assimilate('s', '2023-05-06')")
    ckpt = """SELECT c.location, c.week_end, c.observed, c.ensemble FROM enkf.checkpoints c
                JOIN enkf.twins t USING (twin_id) WHERE t.name = %s ORDER BY 1, 2"""
    assert conn.execute(ckpt, ("v",)).fetchall() == conn.execute(ckpt, ("s",)).fetchall()
    assert conn.execute("SELECT as_of FROM enkf.runs WHERE run_id = %s", (run[0],)).fetchone()[0].isoformat() == "2023-05-06"
    # A later as-of revises the last weeks: re-assimilated from the earliest changed week.
    again = conn.execute("SELECT run_id FROM enkf.assimilate('v', '2023-05-13', as_of => '2023-05-13')").fetchone()[0]
    revised = conn.execute(
        """WITH a AS (SELECT DISTINCT ON (location, time) location, time, value FROM obs
                       WHERE as_of <= '2023-05-06' ORDER BY location, time, as_of DESC),
                b AS (SELECT DISTINCT ON (location, time) location, time, value FROM obs
                       WHERE as_of <= '2023-05-13' ORDER BY location, time, as_of DESC)
           SELECT count(DISTINCT a.location) FROM a JOIN b USING (location, time) WHERE a.value <> b.value"""
    ).fetchone()[0]
    assert revised > 0
    assert conn.execute("SELECT reassimilated FROM enkf.runs WHERE run_id = %s", (again,)).fetchone()[0] == revised
    # A twin without versions refuses an as_of.
    assert sqlstate(conn, "SELECT * FROM enkf.assimilate('s', as_of => '2023-05-06')")[0] == "22023"


def test_backtest_equals_assimilate_and_forecast_by_hand(conn):
    make_versions(conn)
    result = conn.execute(
        "SELECT * FROM enkf.backtest('bt', 'obs', 'locs', '2023-03-04', '2023-04-29', members => 30)"
    ).fetchall()
    conn.execute("SELECT enkf.create_twin('hand', 'obs', 'locs', members => 30, as_of_column => 'as_of')")
    for k in range(9):
        conn.execute("SELECT * FROM enkf.assimilate('hand', DATE '2023-02-25' + %s * 7 + 1 - interval '1 microsecond',"
                     " as_of => DATE '2023-02-25' + %s * 7)", (k, k))
        conn.execute("SELECT count(*) FROM enkf.forecast('hand', reference_date => DATE '2023-03-04' + %s * 7)", (k,))
    assert forecasts(conn, "bt") == forecasts(conn, "hand")
    # Every model: the twin, the baseline, the trend model, the pooled model and the combination.
    assert len(forecasts(conn, "bt")) == 5 * 4 * 9 * 4
    # The returned scores are those of enkf.score on the same forecasts.
    by_hand = {(r[0], r[1]): r for r in conn.execute("SELECT * FROM enkf.score('hand')").fetchall()}
    for model, location, horizon, n, wis, rel, c50, c95, bias in result:
        if model == "enkf" and location is not None:
            s = by_hand[(location, horizon)]
            assert (n, wis, rel, c95, bias) == (s[2], s[3], s[5], s[9], s[12])
    overall = {r[0]: r for r in result if r[1] is None and r[2] is None}
    assert set(overall) == {"enkf", "baseline", "trend", "pooled", "combined"}
    assert all(r[3] == 4 * 9 * 4 for r in overall.values()) and overall["baseline"][5] == 1.0


def test_a_poisoned_future_version_changes_nothing(conn):
    make_versions(conn)
    conn.execute("SELECT count(*) FROM enkf.backtest('clean', 'obs', 'locs', '2023-03-04', '2023-04-29', members => 20)")
    clean = forecasts(conn, "clean")
    # Absurd versions of every week so far, published the day after the as-of of the reference
    # date 2023-03-25 (2023-03-18): they may change the forecasts from 2023-04-01 on, and no
    # earlier one; a backtest that read a version before its publication would differ.
    conn.execute("""INSERT INTO obs SELECT DISTINCT ON (time, location) time, location, value * 50 + 1000, DATE '2023-03-19'
                      FROM obs WHERE time <= '2023-03-18' ORDER BY time, location, as_of DESC""")
    conn.execute("SELECT count(*) FROM enkf.backtest('poisoned', 'obs', 'locs', '2023-03-04', '2023-04-29', members => 20)")
    poisoned = forecasts(conn, "poisoned")
    early = [f for f in clean if f[2].isoformat() <= "2023-03-25"]
    assert early and [f for f in poisoned if f[2].isoformat() <= "2023-03-25"] == early
    later = [f for f in clean if f[2].isoformat() > "2023-03-25"]
    assert [f for f in poisoned if f[2].isoformat() > "2023-03-25"] != later


def pooled_fits(conn, twin):
    return conn.execute(
        """SELECT r.first_week, r.model_fit FROM enkf.runs r JOIN enkf.twins t USING (twin_id)
            WHERE t.name = %s AND r.kind = 'forecast' ORDER BY 1""", (twin,)).fetchall()


def test_the_pooled_model_learns_from_every_location_and_only_what_was_published(conn):
    """The pooled model is fitted inside each forecast on every location's counts as published
    by then: a later release changes none of its earlier fits or forecasts; its fit is recorded
    with the run; and it is bounded (54000) before it reads anything."""
    make_versions(conn, locations=12, weeks=60, seed=11)
    conn.execute("SELECT count(*) FROM enkf.backtest('pc', 'obs', 'locs', '2023-03-04', '2023-04-29', members => 20)")
    clean, fits = forecasts(conn, "pc"), pooled_fits(conn, "pc")
    pooled = {f[1:4]: f[4] for f in clean if f[0] == "pooled"}
    baseline = {f[1:4]: f[4] for f in clean if f[0] == "baseline"}
    # Fitted (12 locations x the 9 most recent origins): not the baseline it falls back to.
    assert len(pooled) == 12 * 9 * 4 and all(pooled[k] != baseline[k] for k in pooled)
    first = fits[0][1]
    assert first["model"] == "pooled" and first["features"][:2] == ["intercept", "level"]
    assert [s["step"] for s in first["steps"]] == [1, 2, 3, 4]
    assert all(s["fitted"] and s["locations"] == 12 and s["rows"] >= 12 * 9 for s in first["steps"])
    assert len(first["steps"][0]["coefficients"]) == len(first["features"]) == 7
    # Absurd versions of every week so far, published after the as-of of 2023-03-25.
    conn.execute("""INSERT INTO obs SELECT DISTINCT ON (time, location) time, location, value * 50 + 1000, DATE '2023-03-19'
                      FROM obs WHERE time <= '2023-03-18' ORDER BY time, location, as_of DESC""")
    conn.execute("SELECT count(*) FROM enkf.backtest('pp', 'obs', 'locs', '2023-03-04', '2023-04-29', members => 20)")
    poisoned, poisoned_fits = forecasts(conn, "pp"), pooled_fits(conn, "pp")
    early = lambda rows: [f for f in rows if f[0] == "pooled" and f[2].isoformat() <= "2023-03-25"]  # noqa: E731
    assert early(clean) and early(poisoned) == early(clean)
    assert [f for f in poisoned_fits if f[0].isoformat() <= "2023-03-25"] == [f for f in fits if f[0].isoformat() <= "2023-03-25"]
    assert [f for f in poisoned if f[0] == "pooled"] != [f for f in clean if f[0] == "pooled"]
    # Bounded before it reads: with few trajectories ((2 x 10 x 1 + 10 paths) x 117 weeks) and
    # one level and horizon, the forecast fits within the limit; the pooled model's 12
    # locations x 60 weeks of counts x 7 features do not.
    conn.execute("SELECT count(*) FROM enkf.backtest('few', 'obs', 'locs', '2023-11-18', '2023-11-18', members => 10,"
                 " config => '{\"forecast\": {\"draws_per_member\": 1}, \"targets\": {\"baseline_paths\": 10}}')")
    conn.execute("SET enkf.max_ensemble_elements = 4000")
    state, message, hint = sqlstate(conn, "SELECT count(*) FROM enkf.forecast('few', horizons => 1, quantile_levels => '{0.5}')")
    conn.execute("RESET enkf.max_ensemble_elements")
    assert state == "54000" and "pooled" in message and "pooled.train_from" in hint, (state, message, hint)
    # Off: the pooled model's forecasts are the baseline's, and no fit is recorded.
    conn.execute("SELECT count(*) FROM enkf.backtest('off', 'obs', 'locs', '2023-03-04', '2023-03-11', members => 20,"
                 " config => '{\"pooled\": {\"enabled\": false}}')")
    off = forecasts(conn, "off")
    assert [f[1:] for f in off if f[0] == "pooled"] == [f[1:] for f in off if f[0] == "baseline"]
    assert all(f[1] is None for f in pooled_fits(conn, "off"))


def nowcast_factors(conn, twin):
    """Each forecast run's nowcast factors (lag 0, 1), from the run's detail."""
    out = []
    for (detail,) in conn.execute(
            """SELECT r.detail FROM enkf.runs r JOIN enkf.twins t USING (twin_id)
                WHERE t.name = %s AND r.kind = 'forecast' ORDER BY r.first_week""", (twin,)).fetchall():
        m = re.search(r"nowcast factors ([0-9. ]+) from (\d+) releases", detail)
        out.append((tuple(float(f) for f in m.group(1).split()), int(m.group(2))) if m else None)
    return out


def test_the_nowcast_learns_the_known_backfill_from_the_versions(conn):
    """Synthetic releases publish each week at 70% of its final count, then 85%, then final
    (versions => 3): the factors learned from the releases must approach 1 / 0.7 and 1 / 0.85,
    shrunk toward 1 by n / (n + 4) for n releases; none without versions."""
    make_versions(conn, locations=6, weeks=60, versions=3, seed=5)
    conn.execute("SELECT count(*) FROM enkf.backtest('nc', 'obs', 'locs', '2023-01-07', '2023-04-29', members => 20)")
    factors = nowcast_factors(conn, "nc")
    assert all(f is not None for f in factors)
    (f0, f1), n = factors[-1]
    assert n == 9  # releases of 2023-02-18 .. 2023-04-15 hold pairs two weeks old
    # The known answer, from the table: the last run read the releases of 2023-02-18 ..
    # 2023-04-22; release D first published week D (lag 0) and showed week D - 7 a second time
    # (lag 1); pairs of weeks at least two weeks older than the newest (2023-04-22), all
    # locations (none aggregates the others), against their final counts.
    # A protected twin (the default) learns from counts censored as its models see them.
    def censor(v):
        v = float(v)
        return 5.5 if 0 < v < 11 else v
    rows = [(t, loc, a, censor(v)) for t, loc, a, v in conn.execute("SELECT time, location, as_of, value FROM obs").fetchall()]
    final = {}
    for t, loc, a, v in sorted(rows, key=lambda r: r[2]):
        final[(t, loc)] = float(v)
    newest = dt.date(2023, 4, 22)
    expected = []
    for lag in (0, 1):
        first = current = 0.0
        releases = set()
        for t, loc, a, v in rows:
            if (a - t).days == 7 * lag and newest - dt.timedelta(days=70) < a <= newest \
                    and t <= newest - dt.timedelta(days=14):
                first += float(v)
                current += final[(t, loc)]
                releases.add(a)
        ratio = (current + 1) / (first + 1)
        expected.append(ratio ** (len(releases) / (len(releases) + 4)))
    assert abs(f0 - expected[0]) < 1e-3 and abs(f1 - expected[1]) < 1e-3, (factors[-1], expected)
    # That is the synthetic backfill's 1 / 0.7 and 1 / 0.85, shrunk.
    assert abs(f0 - (1 / 0.7) ** (8 / 12)) < 0.02 and abs(f1 - (1 / 0.85) ** (9 / 13)) < 0.02
    # The trend and pooled models start from the corrected weeks: off, they differ.
    conn.execute("SELECT count(*) FROM enkf.backtest('nc_off', 'obs', 'locs', '2023-01-07', '2023-01-14', members => 20,"
                 " config => '{\"nowcast\": {\"lags\": 0}}')")
    assert nowcast_factors(conn, "nc_off") == [None, None]
    on = {f[1:4]: f[4] for f in forecasts(conn, "nc") if f[0] == "trend"}
    off = {f[1:4]: f[4] for f in forecasts(conn, "nc_off") if f[0] == "trend"}
    assert off and all(on[k] != off[k] for k in off)
    # Without versions: nothing to learn from, no nowcast.
    conn.execute("CREATE TABLE final AS SELECT DISTINCT ON (location, time) time, location, value FROM obs ORDER BY location, time, as_of DESC")
    conn.execute("SELECT count(*) FROM enkf.backtest('nc_final', 'final', 'locs', '2023-01-07', '2023-01-14', members => 20,"
                 " as_of_column => NULL)")
    assert nowcast_factors(conn, "nc_final") == [None, None]


def test_a_backtest_continues_only_its_own_twins(conn):
    """A backtest replays old versions: run under a production twin's name it would rewrite that
    twin's analyses with them. Only a twin enkf.backtest created is continued, and that mark is
    fixed at creation, out of an administrator's reach."""
    make_versions(conn)
    conn.execute("SELECT enkf.create_twin('prod', 'obs', 'locs', members => 20, as_of_column => 'as_of')")
    conn.execute("SELECT * FROM enkf.assimilate('prod', '2023-03-01')")
    before = written(conn)
    state, message, hint = sqlstate(
        conn, "SELECT count(*) FROM enkf.backtest('prod', 'obs', 'locs', '2023-03-04', '2023-03-11', members => 20)")
    assert state == "55000" and "not created by enkf.backtest" in message and "new twin name" in hint
    assert written(conn) == before
    conn.execute("SELECT count(*) FROM enkf.backtest('bt', 'obs', 'locs', '2023-03-04', '2023-03-11', members => 20)")
    conn.execute("SELECT count(*) FROM enkf.backtest('bt', 'obs', 'locs', '2023-03-18', '2023-03-25', members => 20)")
    assert conn.execute("SELECT name, backtest FROM enkf.twins ORDER BY 1").fetchall() == [("bt", True), ("prod", False)]
    conn.execute("SELECT * FROM enkf.create_roles()")
    role = f"adm_{conn.info.backend_pid}"
    conn.execute(f"CREATE ROLE {role} IN ROLE enkf_admin")
    try:
        conn.execute(f"SET ROLE {role}")
        assert sqlstate(conn, "UPDATE enkf.twins SET backtest = true WHERE name = 'prod'")[0] == "42501"
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP ROLE {role}")


def test_twin_names_cannot_pass_for_another_twins_model(conn):
    """hubverse model_ids are "<twin>-<model>": a twin named "flu-combined" would mix into twin
    flu's combination wherever forecasts are read by model_id (hub_submission)."""
    make_versions(conn)
    for name in ("flu-combined", "flu-pooled", "x-baseline", "x-trend", "x-climatology"):
        state, message, hint = sqlstate(conn, "SELECT enkf.create_twin(%s, 'obs', 'locs')", (name,))
        assert state == "22023" and "model_id" in message and "underscore" in hint, (name, message)
    conn.execute("SELECT enkf.create_twin('flu_combined', 'obs', 'locs')")


def test_bad_inputs_are_refused_and_write_nothing(conn):
    make_versions(conn)
    conn.execute("CREATE TABLE early AS SELECT * FROM obs")
    conn.execute("UPDATE early SET as_of = time - 1 WHERE time = '2023-02-04'")
    conn.execute("SELECT count(*) FROM enkf.backtest('done', 'obs', 'locs', '2023-03-04', '2023-03-25', members => 10)")
    before = written(conn)
    cases = [
        ("SELECT * FROM enkf.backtest('b1', 'obs', 'locs', '2023-03-04', '2023-04-01', as_of_column => 'published')", "42703"),
        ("SELECT * FROM enkf.backtest('b2', 'early', 'locs', '2023-03-04', '2023-04-01', members => 10)", "22023"),
        ("SELECT * FROM enkf.backtest('done', 'obs', 'locs', '2023-03-18', '2023-04-15', members => 10)", "22023"),
        ("SELECT * FROM enkf.backtest('b3', 'obs', 'locs', '2023-04-01', '2023-03-04')", "22023"),
        ("SELECT * FROM enkf.backtest('b4', 'obs', 'locs', '2023-03-05', '2023-04-01')", "22023"),
        ("SELECT * FROM enkf.backtest('b5', 'obs', 'locs', '2023-03-04', '2023-04-01', publication_lag => 0)", "22023"),
        ("SELECT * FROM enkf.backtest('b6', 'nonesuch', 'locs', '2023-03-04', '2023-04-01')", "42P01"),
    ]
    for query, state in cases:
        code, message, hint = sqlstate(conn, query)
        # (An unknown table is refused by PostgreSQL's regclass input, before pg_enkf runs.)
        assert code == state and message and (hint or code == "42P01"), (query, code, message)
        assert written(conn) == before, query
    # Continuing the backtest after its last reference date is allowed.
    conn.execute("SELECT count(*) FROM enkf.backtest('done', 'obs', 'locs', '2023-04-01', '2023-04-15', members => 10)")
    assert conn.execute(
        "SELECT count(DISTINCT reference_date) FROM enkf.forecasts JOIN enkf.twins USING (twin_id) WHERE name = 'done'"
    ).fetchone()[0] == 7


def test_backtest_reports_progress_and_stops_on_cancel(cluster, conn):
    make_versions(conn, locations=20, weeks=80)
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute("SELECT count(*) FROM enkf.backtest('p', 'obs', 'locs', '2023-03-04', '2023-03-25', members => 10)")
    assert len([n for n in notices if n.startswith("enkf.backtest: reference date")]) == 4
    before = written(conn)
    conn.execute("SET statement_timeout = '300ms'")
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT count(*) FROM enkf.backtest('q', 'obs', 'locs', '2022-12-03', '2024-03-30', members => 300)")
    conn.execute("RESET statement_timeout")
    assert written(conn) == before
