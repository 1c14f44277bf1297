"""The epidemic twin through SQL, on synthetic data from its own generator (never real
patient-level data): parameter recovery, calibration, constraints, incremental and revised
assimilation, forecasts and scores, and every bad input with its SQLSTATE."""

from __future__ import annotations

import pytest

from support.data import checkpoints, hypertable, make_data, truth
from support.errors import sqlstate

STATIC = '{"process_noise": {"beta": 0, "ihr": 0}, "filter": {"inflation": 1.0}}'


# --- known answers on synthetic data -----------------------------------------------------------


def test_recovers_parameters_through_sql(conn):
    make_data(conn, locations=12)
    # The model's own synthetic counts, small ones included: public data, no small-cell rule.
    conn.execute(f"SELECT enkf.create_twin('static', 'obs', 'locs', members => 200, config => '{STATIC}', "
                 "classification => 'public_aggregate')")
    conn.execute("SELECT * FROM enkf.assimilate('static')")
    est = {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            "SELECT location, variable, mean FROM enkf.state_estimates WHERE twin = 'static' AND variable IN ('beta', 'ihr')"
        ).fetchall()
    }
    errors = []
    for loc, (beta, ihr, peak) in truth(conn, 12).items():
        if peak >= 500:  # informative epidemics, as in the core test
            errors.append((abs(est[(loc, "beta")] - beta) / beta, abs(est[(loc, "ihr")] - ihr) / ihr))
    assert len(errors) >= 4
    assert max(e[0] for e in errors) <= 0.20, errors
    assert max(e[1] for e in errors) <= 0.50, errors


def test_constraints_hold_after_every_update(conn):
    make_data(conn, locations=5, weeks=120)
    conn.execute("SELECT enkf.create_twin('c', 'obs', 'locs', members => 50)")
    conn.execute("SELECT * FROM enkf.assimilate('c')")
    bad = conn.execute(
        """WITH m AS (
             SELECT c.location, c.week_end, j,
                    c.ensemble[1][j] AS s, c.ensemble[2][j] AS e, c.ensemble[3][j] AS i, c.ensemble[4][j] AS r,
                    c.ensemble[5][j] AS h, c.ensemble[6][j] AS beta, c.ensemble[7][j] AS ihr, l.population
               FROM enkf.checkpoints c JOIN locs l USING (location), generate_series(1, 50) j)
           SELECT count(*) FILTER (WHERE least(s, e, i, r, h) < 0),
                  count(*) FILTER (WHERE abs(s + e + i + r - population) > 1e-6 * population),
                  count(*) FILTER (WHERE beta < 0.05 OR beta > 2.0 OR ihr < 1e-5 OR ihr > 0.1),
                  count(*)
             FROM m"""
    ).fetchone()
    assert bad[:3] == (0, 0, 0) and bad[3] == 5 * 120 * 50


def test_forecast_intervals_cover_near_nominal(conn):
    make_data(conn, locations=8)
    conn.execute("SELECT enkf.create_twin('cov', 'obs', 'locs', members => 300)")
    # A weekly real-time loop over the last season.
    weeks = [r[0] for r in conn.execute("SELECT DISTINCT time FROM obs WHERE time >= '2024-09-28' ORDER BY 1").fetchall()]
    for through in weeks[:-4:2]:
        conn.execute("SELECT * FROM enkf.assimilate('cov', %s)", (through,))
        conn.execute("SELECT count(*) FROM enkf.forecast('cov')")
    n, c50, c95 = conn.execute(
        "SELECT sum(forecasts), sum(forecasts * coverage_50), sum(forecasts * coverage_95) FROM enkf.score('cov')"
    ).fetchone()
    assert n >= 500
    assert 0.88 <= c95 / n <= 0.995, c95 / n
    assert 0.35 <= c50 / n <= 0.70, c50 / n


# --- incremental, missing and revised data -----------------------------------------------------


def test_incremental_equals_one_shot(conn):
    make_data(conn, locations=3, weeks=60)
    conn.execute("SELECT enkf.create_twin('once', 'obs', 'locs', members => 40)")
    conn.execute("SELECT enkf.create_twin('steps', 'obs', 'locs', members => 40)")
    conn.execute("SELECT * FROM enkf.assimilate('once')")
    for through in ("2023-01-07", "2023-06-03", "2023-06-10", "2023-11-25"):
        conn.execute("SELECT * FROM enkf.assimilate('steps', %s)", (through,))
    conn.execute("SELECT * FROM enkf.assimilate('steps')")
    assert checkpoints(conn, "once") == checkpoints(conn, "steps")


def test_missing_weeks_are_forecast_without_update(conn):
    make_data(conn, locations=2, weeks=30)
    conn.execute("UPDATE obs SET value = NULL WHERE time = '2022-11-05'")
    conn.execute("UPDATE obs SET value = 'NaN' WHERE time = '2022-11-12'")
    conn.execute("DELETE FROM obs WHERE time = '2022-11-19'")
    conn.execute("SELECT enkf.create_twin('gaps', 'obs', 'locs', members => 30)")
    run = conn.execute("SELECT * FROM enkf.assimilate('gaps')").fetchone()
    assert run[1] == 2 and run[2] == 2 * 27
    rows = conn.execute(
        """SELECT week_end::text, observed FROM enkf.checkpoints WHERE location = 'L00001'
            AND week_end BETWEEN '2022-10-29' AND '2022-11-26' ORDER BY 1"""
    ).fetchall()
    assert [r[0] for r in rows] == ["2022-10-29", "2022-11-05", "2022-11-12", "2022-11-19", "2022-11-26"]
    assert [r[1] is None for r in rows] == [False, True, True, True, False]


def test_revised_counts_reassimilate_from_the_changed_week(conn):
    make_data(conn, locations=3, weeks=80)
    conn.execute("SELECT enkf.create_twin('live', 'obs', 'locs', members => 40)")
    conn.execute("SELECT * FROM enkf.assimilate('live', '2024-01-06')")
    # NHSN-style backfill: two past weeks of one location revised upwards, one missing week filled.
    conn.execute("UPDATE obs SET value = value + 25 WHERE location = 'L00002' AND time IN ('2023-11-04', '2023-12-02')")
    conn.execute("UPDATE obs SET value = value * 2 WHERE location = 'L00003' AND time = '2023-12-30'")
    run = conn.execute("SELECT * FROM enkf.assimilate('live', '2024-01-06')").fetchone()
    log = conn.execute(
        "SELECT reassimilated, first_week::text, observations FROM enkf.run_log WHERE run_id = %s", (run[0],)
    ).fetchone()
    # Two locations re-run, from the earliest changed week (not from scratch), re-assimilating
    # only the weeks from there on: 10 weeks for L00002, 2 for L00003.
    assert log == (2, "2023-11-04", 10 + 2)
    # The same state as a twin that only ever saw the revised series.
    conn.execute("SELECT enkf.create_twin('fresh', 'obs', 'locs', members => 40)")
    conn.execute("SELECT * FROM enkf.assimilate('fresh', '2024-01-06')")
    assert checkpoints(conn, "live") == checkpoints(conn, "fresh")
    # Nothing changed: nothing re-run.
    run = conn.execute("SELECT * FROM enkf.assimilate('live', '2024-01-06')").fetchone()
    assert run[1:3] == (0, 0)


def test_every_kind_of_change_matches_a_fresh_twin(conn):
    """The revision check compares per-location fingerprints first, then week by week: each
    kind of change must still be found, and the result equal a twin that only saw the new
    table."""
    make_data(conn, locations=5, weeks=50)
    # L00005's history arrives late, all at once (a new jurisdiction, backfilled).
    conn.execute("CREATE TABLE late AS SELECT * FROM obs WHERE location = 'L00005'")
    conn.execute("DELETE FROM obs WHERE location = 'L00005'")
    conn.execute("UPDATE obs SET value = NULL WHERE location = 'L00004' AND time = '2023-05-06'")
    conn.execute("SELECT enkf.create_twin('live', 'obs', 'locs', members => 20)")
    conn.execute("SELECT * FROM enkf.assimilate('live', '2023-08-26')")
    conn.execute("INSERT INTO obs SELECT * FROM late")
    # A count withdrawn (row deleted), a missing week filled in, a week's count revised to zero.
    conn.execute("DELETE FROM obs WHERE location = 'L00001' AND time = '2023-06-03'")
    conn.execute(
        "UPDATE obs SET value = 40 WHERE location = 'L00004' AND time = '2023-05-06'"
    )
    conn.execute("""UPDATE obs SET value = 0 WHERE location = 'L00002' AND time = (
                      SELECT max(time) FROM obs WHERE location = 'L00002' AND value > 0 AND time <= '2023-07-01')""")
    run = conn.execute("SELECT * FROM enkf.assimilate('live', '2023-08-26')").fetchone()
    log = conn.execute(
        "SELECT reassimilated, first_week::text FROM enkf.run_log WHERE run_id = %s", (run[0],)
    ).fetchone()
    assert log == (3, "2022-10-01"), log  # three revised; L00005 new, from its first week
    assert run[1] == 4
    conn.execute("SELECT enkf.create_twin('fresh', 'obs', 'locs', members => 20)")
    conn.execute("SELECT * FROM enkf.assimilate('fresh', '2023-08-26')")
    assert checkpoints(conn, "live") == checkpoints(conn, "fresh")
    # Nothing changed since: nothing re-run; new weeks only move every location on.
    assert conn.execute("SELECT * FROM enkf.assimilate('live', '2023-08-26')").fetchone()[1:3] == (0, 0)
    run = conn.execute("SELECT * FROM enkf.assimilate('live', '2023-09-09')").fetchone()
    assert run[1:3] == (5, 10)
    conn.execute("SELECT * FROM enkf.assimilate('fresh', '2023-09-09')")
    assert checkpoints(conn, "live") == checkpoints(conn, "fresh")


def prints(conn, twin):
    return conn.execute(
        """SELECT c.location, c.week_end, c.rows_print, c.source_rows FROM enkf.checkpoints c
             JOIN enkf.twins t USING (twin_id) WHERE t.name = %s ORDER BY 1, 2""",
        (twin,),
    ).fetchall()


def test_revision_fingerprints_of_rows(conn):
    """The revision check fingerprints the rows each week was assimilated from (their times and
    counts, and how many). Rows rewritten with the same weekly count re-run nothing; repeated
    copies of a row are found even when their hashes cancel; checkpoints without fingerprints
    (written before 0.2.0) are compared week by week, then fingerprinted."""
    conn.execute("CREATE TABLE locs AS SELECT l AS location, 1e6::numeric AS population FROM unnest(ARRAY['A', 'B']) l")
    conn.execute(
        """CREATE TABLE daily AS SELECT ts, l AS loc, (10 + extract(doy FROM ts)::int % 5)::float8 AS n
             FROM generate_series('2023-01-01 12:00+00'::timestamptz, '2023-04-01 12:00+00', '1 day') ts,
                  unnest(ARRAY['A', 'B']) l"""
    )
    hypertable(conn, "daily", "ts")
    conn.execute("DELETE FROM daily WHERE loc = 'A' AND ts BETWEEN '2023-01-15' AND '2023-01-22'")  # a missing week
    conn.execute("SELECT enkf.create_twin('live', 'daily', 'locs', 'ts', 'loc', 'n', members => 10)")
    conn.execute("SELECT * FROM enkf.assimilate('live')")
    got = {(p[0], p[1].isoformat()): p[2:] for p in prints(conn, "live")}
    assert got[("A", "2023-01-21")] == (0, 0) and len(got) == 2 * 13
    assert all(p[0] is not None and p[1] == 7 for k, p in got.items() if k != ("A", "2023-01-21"))
    # Two days of a week moved against each other: the week's count is unchanged.
    conn.execute("UPDATE daily SET n = n + 3 WHERE loc = 'A' AND ts = '2023-02-01 12:00+00'")
    conn.execute("UPDATE daily SET n = n - 3 WHERE loc = 'A' AND ts = '2023-02-02 12:00+00'")
    before = prints(conn, "live")
    run = conn.execute("SELECT * FROM enkf.assimilate('live')").fetchone()
    assert run[1:3] == (0, 0)
    after = prints(conn, "live")
    changed = [(a[0], a[1].isoformat()) for a, b in zip(after, before) if a != b]
    assert changed == [("A", "2023-02-04")], changed  # its fingerprint is the table's now
    # Two more copies of a row: their hashes XOR to zero, their number does not.
    conn.execute("INSERT INTO daily SELECT * FROM daily WHERE loc = 'B' AND ts = '2023-03-01 12:00+00'")
    conn.execute("INSERT INTO daily SELECT * FROM daily WHERE loc = 'B' AND ts = '2023-03-01 12:00+00'")
    assert sqlstate(conn, "SELECT * FROM enkf.assimilate('live')")[0] == "23505"
    # (A row's ctid is unique within its table only: with tableoid, within a hypertable too.)
    conn.execute(
        """DELETE FROM daily WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM daily
                                                         WHERE loc = 'B' AND ts = '2023-03-01 12:00+00'
                                                         ORDER BY ctid OFFSET 1)"""
    )
    # Checkpoints as 0.1.0 wrote them, and a revision among them.
    conn.execute("UPDATE enkf.checkpoints SET rows_print = NULL, source_rows = NULL")
    conn.execute("UPDATE daily SET n = n + 50 WHERE loc = 'B' AND ts = '2023-03-15 12:00+00'")
    run = conn.execute("SELECT * FROM enkf.assimilate('live')").fetchone()
    log = conn.execute("SELECT reassimilated, first_week::text FROM enkf.run_log WHERE run_id = %s", (run[0],)).fetchone()
    assert log == (1, "2023-03-18")
    conn.execute("SELECT enkf.create_twin('fresh', 'daily', 'locs', 'ts', 'loc', 'n', members => 10)")
    conn.execute("SELECT * FROM enkf.assimilate('fresh')")
    assert checkpoints(conn, "live") == checkpoints(conn, "fresh")
    assert prints(conn, "live") == prints(conn, "fresh")
    assert conn.execute("SELECT * FROM enkf.assimilate('live')").fetchone()[1:3] == (0, 0)


def test_checkpoint_retention_and_revision_beyond_it(conn):
    make_data(conn, locations=2, weeks=40)
    conn.execute("""SELECT enkf.create_twin('kept', 'obs', 'locs', members => 20, config => '{"checkpoints": {"keep_weeks": 8}}')""")
    conn.execute("SELECT * FROM enkf.assimilate('kept')")
    assert conn.execute("SELECT count(*) FROM enkf.checkpoints").fetchone()[0] == 2 * 8
    # A revision in the oldest kept week needs the pruned week before: re-run from the prior.
    oldest = conn.execute("SELECT min(week_end) FROM enkf.checkpoints WHERE location = 'L00001'").fetchone()[0]
    conn.execute("UPDATE obs SET value = value + 7 WHERE location = 'L00001' AND time = %s", (oldest,))
    conn.execute("SELECT * FROM enkf.assimilate('kept')")
    conn.execute("""SELECT enkf.create_twin('kept2', 'obs', 'locs', members => 20, config => '{"checkpoints": {"keep_weeks": 8}}')""")
    conn.execute("SELECT * FROM enkf.assimilate('kept2')")
    assert checkpoints(conn, "kept") == checkpoints(conn, "kept2")


def test_daily_rows_and_timestamps_are_bucketed_into_weeks(conn):
    conn.execute("CREATE TABLE locs AS SELECT 'A'::text AS location, 1e6::numeric AS population")
    # Seven daily rows per week, timestamptz, summing to 70 a week.
    conn.execute(
        """CREATE TABLE daily AS SELECT ts, 'A'::text AS loc, 10::int AS n
             FROM generate_series('2023-01-01 12:00+00'::timestamptz, '2023-03-04 12:00+00', '1 day') ts"""
    )
    hypertable(conn, "daily", "ts")
    conn.execute("SELECT enkf.create_twin('d', 'daily', 'locs', 'ts', 'loc', 'n', members => 10)")
    conn.execute("SELECT * FROM enkf.assimilate('d')")
    rows = conn.execute("SELECT week_end::text, observed FROM enkf.checkpoints ORDER BY 1").fetchall()
    assert rows[0] == ("2023-01-07", 70.0) and rows[-1] == ("2023-03-04", 70.0) and len(rows) == 9


@pytest.mark.parametrize("not_null", [False, True])
def test_through_mid_week_takes_complete_weeks_only(conn, not_null):
    """The span of the data comes from the time column's minimum and maximum; a `through` in the
    middle of a week stops at the week before it, whatever rows that week already has."""
    conn.execute("CREATE TABLE locs AS SELECT 'A'::text AS location, 1e6::numeric AS population")
    conn.execute(
        """CREATE TABLE daily AS SELECT ts::date AS day, 'A'::text AS loc, 10::int AS n
             FROM generate_series('2023-01-01'::date, '2023-03-08', '1 day') ts"""
    )
    if not_null:  # no row can lack a time or location: the check for such rows is skipped
        conn.execute("ALTER TABLE daily ALTER day SET NOT NULL, ALTER loc SET NOT NULL")
    conn.execute("SELECT enkf.create_twin('d', 'daily', 'locs', 'day', 'loc', 'n', members => 10)")
    run = conn.execute("SELECT * FROM enkf.assimilate('d', '2023-02-08 12:00+00')").fetchone()
    assert run[1:3] == (1, 5) and str(run[4])[:10] == "2023-02-04"
    run = conn.execute("SELECT * FROM enkf.assimilate('d', '2023-03-04')").fetchone()
    assert run[1:3] == (1, 4) and str(run[4])[:10] == "2023-03-04"
    # Everything: the rows of the unfinished week ending 2023-03-11 are assimilated as that week.
    run = conn.execute("SELECT * FROM enkf.assimilate('d', '2023-03-20')").fetchone()
    assert str(run[4])[:10] == "2023-03-11"
    if not not_null:
        conn.execute("INSERT INTO daily VALUES (NULL, 'A', 3)")
        assert sqlstate(conn, "SELECT * FROM enkf.assimilate('d', '2023-03-20')")[0] == "22004"


# --- forecasts, scores, views ------------------------------------------------------------------


def test_forecast_rows_and_hubverse_view(conn):
    make_data(conn, locations=3, weeks=40)
    conn.execute("SELECT enkf.create_twin('f', 'obs', 'locs', members => 50)")
    conn.execute("SELECT * FROM enkf.assimilate('f')")
    rows = conn.execute("SELECT * FROM enkf.forecast('f')").fetchall()
    assert len(rows) == 3 * 4 * 23
    last = conn.execute("SELECT max(time) FROM obs").fetchone()[0]
    ref = {r[1] for r in rows}
    assert len(ref) == 1 and (ref.pop() - last).days == 7
    assert sorted({r[2] for r in rows}) == [0, 1, 2, 3]
    assert all((r[3] - r[1]).days == 7 * r[2] for r in rows)
    # Quantiles increase within each forecast and are never negative.
    by = {}
    for loc, _, h, _, p, v in rows:
        by.setdefault((loc, h), []).append((p, v))
    for qs in by.values():
        vals = [v for _, v in sorted(qs)]
        assert vals == sorted(vals) and vals[0] >= 0
    hub = conn.execute(
        """SELECT model_id, target, output_type, count(*) FROM enkf.hubverse_forecasts
            WHERE output_type = 'quantile' AND horizon >= 0 GROUP BY 1, 2, 3 ORDER BY 1"""
    ).fetchall()
    # Every model of the product, each under its own model_id: the twin, the baseline, the
    # trend model, the pooled model and their combination (the other hub targets:
    # tests/twin/test_targets.py).
    assert hub == [(m, "wk inc flu hosp", "quantile", 276)
                   for m in ("f", "f-baseline", "f-combined", "f-pooled", "f-trend")]
    types = conn.execute(
        """SELECT string_agg(format_type(a.atttypid, NULL), ',' ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = 'enkf.hubverse_forecasts'::regclass AND a.attnum > 0"""
    ).fetchone()[0]
    assert types == "text,date,text,integer,date,text,text,text,double precision"
    # Custom levels and horizons.
    rows = conn.execute("SELECT * FROM enkf.forecast('f', 2, ARRAY[0.1, 0.5, 0.9])").fetchall()
    assert len(rows) == 3 * 2 * 3


def test_score_compares_with_baseline(conn):
    make_data(conn, locations=4, weeks=100)
    conn.execute("SELECT enkf.create_twin('s', 'obs', 'locs', members => 100)")
    for through in ("2024-01-06", "2024-01-13", "2024-01-20"):
        conn.execute("SELECT * FROM enkf.assimilate('s', %s)", (through,))
        conn.execute("SELECT count(*) FROM enkf.forecast('s')")
    rows = conn.execute("SELECT * FROM enkf.score('s') ORDER BY location, horizon").fetchall()
    assert len(rows) == 4 * 4
    for r in rows:
        loc, h, n, wis, bwis, rel = r[:6]
        assert n == 3  # reference dates 2024-01-13, -20, -27; every target is in the data
        assert wis >= 0 and bwis >= 0 and (rel is None or abs(rel - wis / bwis) < 1e-12)
    assert conn.execute("SELECT count(*) FROM enkf.score('s', '2024-01-28', NULL)").fetchone()[0] == 0
    assert conn.execute("SELECT sum(forecasts) FROM enkf.score('s', '2024-01-20', '2024-01-20')").fetchone()[0] == 16


def test_runs_record_provenance(conn):
    make_data(conn, locations=2, weeks=20)
    conn.execute("CREATE ROLE enkf_prov_analyst")
    conn.execute("GRANT enkf_prov_analyst TO CURRENT_USER")
    conn.execute("SELECT enkf.create_twin('p', 'obs', 'locs', members => 10, config => '{\"seed\": 42}')")
    conn.execute("SELECT * FROM enkf.assimilate('p', '2022-12-31')")
    r = conn.execute(
        """SELECT kind, status, run_by, through IS NOT NULL, source, extension_version, seed, length(config_hash),
                  config_hash = (SELECT config_hash FROM enkf.twins WHERE name = 'p')
             FROM enkf.runs"""
    ).fetchone()
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_enkf'").fetchone()[0]
    assert r == ("assimilate", "succeeded", "postgres", True, "public.obs", version, 42, 64, True)
    conn.execute("DROP ROLE enkf_prov_analyst")


def test_many_twins_in_one_database(conn):
    make_data(conn, locations=3, weeks=30, seed=1, table="obs_a", loc_table="locs_a")
    make_data(conn, locations=5, weeks=30, seed=2, table="obs_b", loc_table="locs_b")
    for k in range(4):
        src = "a" if k % 2 == 0 else "b"
        conn.execute(f"SELECT enkf.create_twin('multi{k}', 'obs_{src}', 'locs_{src}', members => 20, config => '{{\"seed\": {k}}}')")
        conn.execute(f"SELECT * FROM enkf.assimilate('multi{k}')")
    counts = conn.execute("SELECT name, locations_assimilated FROM enkf.twin_summary ORDER BY 1").fetchall()
    assert counts == [("multi0", 3), ("multi1", 5), ("multi2", 3), ("multi3", 5)]
    assert conn.execute("SELECT enkf.drop_twin('multi0')").fetchone()[0] is True
    assert conn.execute("SELECT count(*) FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id)").fetchone()[0] == 3 * 30 * 1 + 5 * 30 * 2


def test_identifiers_are_quoted_not_injected(conn):
    conn.execute('CREATE TABLE "Weird Obs" ("when; DROP TABLE victim; --" date, "Loc""x" text, "v a l" int)')
    conn.execute("CREATE TABLE victim (x int)")
    conn.execute("CREATE TABLE locs AS SELECT 'A'::text AS location, 5e5::numeric AS population")
    hypertable(conn, '"Weird Obs"', "when; DROP TABLE victim; --")
    conn.execute("""INSERT INTO "Weird Obs" SELECT d::date, 'A', 5 FROM generate_series('2023-01-07'::date, '2023-03-04', '7 days') d""")
    conn.execute(
        """SELECT enkf.create_twin('weird', '"Weird Obs"', 'locs', 'when; DROP TABLE victim; --', 'Loc"x', 'v a l', members => 10)"""
    )
    assert conn.execute("SELECT locations FROM enkf.assimilate('weird')").fetchone()[0] == 1
    assert conn.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone()[0]


# --- bad input ---------------------------------------------------------------------------------


def test_bad_inputs_raise_specific_errors(conn):
    make_data(conn, locations=2, weeks=20)
    conn.execute("SELECT enkf.create_twin('ok', 'obs', 'locs', members => 10)")
    cases = [
        ("SELECT * FROM enkf.assimilate('nope')", "42704"),
        ("SELECT * FROM enkf.forecast('nope')", "42704"),
        ("SELECT * FROM enkf.score('nope')", "42704"),
        ("SELECT * FROM enkf.assimilate(NULL)", "22004"),
        ("SELECT * FROM enkf.forecast('ok')", "55000"),
        ("SELECT enkf.create_twin('ok', 'obs', 'locs')", "23505"),
        ("SELECT enkf.create_twin('x', 'no_such_table', 'locs')", "42P01"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', time_column => 'date')", "42703"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', value_column => 'nope')", "42703"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', value_column => 'location')", "42804"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', time_column => 'value')", "42804"),
        ("SELECT enkf.create_twin('x', 'obs', 'obs')", "42703"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', model => 'sir')", "22023"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', members => 1)", "22023"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', config => '{\"filter\": {\"infaltion\": 1.1}}')", "22023"),
        ("SELECT enkf.create_twin('x', 'obs', 'locs', config => '{\"priors\": {\"ihr\": [0.5, 0.1]}}')", "22023"),
        ("SELECT enkf.create_twin('', 'obs', 'locs')", "22023"),
        ("SELECT * FROM enkf.assimilate('ok', '2020-01-01')", "22023"),
        ("SELECT * FROM enkf.forecast('ok', 0)", "22023"),
        ("SELECT enkf.synthetic_surveillance(0)", "22023"),
    ]
    for query, state in cases:
        got = sqlstate(conn, query)
        assert got[0] == state, (query, got)
        # 42P01 comes from PostgreSQL's own regclass input, before pg_enkf runs.
        assert got[2] or state == "42P01", f"no hint for {query}"
    conn.execute("SELECT * FROM enkf.assimilate('ok')")
    for levels in ("ARRAY[0.5, 0.1]", "ARRAY[0, 0.5]", "ARRAY[0.5, NULL]", "'{}'::float8[]"):
        assert sqlstate(conn, f"SELECT * FROM enkf.forecast('ok', 4, {levels})")[0] in ("22023", "22004")
    with conn.transaction():
        conn.execute("SET LOCAL enkf.max_ensemble_elements = 100")
        assert sqlstate(conn, "SELECT enkf.create_twin('big', 'obs', 'locs', members => 300)")[0] == "54000"


def test_bad_table_contents_raise_and_write_nothing(conn):
    on_hypertable = make_data(conn, locations=3, weeks=30)
    conn.execute("SELECT enkf.create_twin('t', 'obs', 'locs', members => 10)")
    conn.execute("SELECT * FROM enkf.assimilate('t', '2023-01-07')")
    before = (checkpoints(conn, "t"), conn.execute("SELECT count(*) FROM enkf.runs").fetchone())

    def expect(setup, undo, state):
        conn.execute(setup)
        got = sqlstate(conn, "SELECT * FROM enkf.assimilate('t')")
        assert got[0] == state, (setup, got)
        conn.execute(undo)
        # All or nothing: the failed run left no checkpoint, forecast or run behind.
        assert (checkpoints(conn, "t"), conn.execute("SELECT count(*) FROM enkf.runs").fetchone()) == before

    # A problem found in the last location, after the others were processed.
    expect("UPDATE obs SET value = -4 WHERE location = 'L00003' AND time = '2023-03-04'",
           "UPDATE obs SET value = 1 WHERE location = 'L00003' AND time = '2023-03-04'", "22023")
    expect("INSERT INTO obs SELECT time, location, value FROM obs WHERE location = 'L00003' AND time = '2023-03-04'",
           "DELETE FROM obs WHERE (tableoid, ctid) IN (SELECT tableoid, max(ctid) FROM obs WHERE location = 'L00003' AND time = '2023-03-04' GROUP BY 1)", "23505")
    expect("UPDATE locs SET population = NULL WHERE location = 'L00002'",
           "UPDATE locs SET population = 1e6 WHERE location = 'L00002'", "22004")
    expect("UPDATE locs SET population = 0 WHERE location = 'L00002'",
           "UPDATE locs SET population = 1e6 WHERE location = 'L00002'", "22023")
    expect("UPDATE locs SET population = 1.1e10 WHERE location = 'L00002'",
           "UPDATE locs SET population = 1e6 WHERE location = 'L00002'", "22023")
    if on_hypertable:  # a hypertable itself refuses -infinity (it takes 'infinity')
        assert sqlstate(conn, "INSERT INTO obs VALUES ('-infinity', 'L00001', 3)")[0] == "22008"
    else:
        expect("INSERT INTO obs VALUES ('-infinity', 'L00001', 3)", "DELETE FROM obs WHERE time = '-infinity'", "22023")
    expect("INSERT INTO obs VALUES ('2023-03-04', 'ZZZ', 3)", "DELETE FROM obs WHERE location = 'ZZZ'", "23503")
    expect("INSERT INTO obs VALUES ('2023-03-04', NULL, 3)", "DELETE FROM obs WHERE location IS NULL", "22004")
    expect("ALTER TABLE obs RENAME COLUMN value TO v", "ALTER TABLE obs RENAME COLUMN v TO value", "42703")
    expect("ALTER TABLE obs ALTER COLUMN value TYPE text", "ALTER TABLE obs ALTER COLUMN value TYPE float8 USING value::float8", "42804")
    conn.execute("CREATE TABLE empty (time date, location text, value int)")
    conn.execute("SELECT enkf.create_twin('e', 'empty', 'locs')")
    assert sqlstate(conn, "SELECT * FROM enkf.assimilate('e')")[0] == "22023"


def test_dates_at_the_limits_of_the_date_type(conn):
    """Infinite times and dates near the end of type date: clear errors or well-defined
    behaviour, never a value PostgreSQL cannot read back (found by tests/sql/test_fuzz.py)."""
    # The last week would fall after 5874897-12-31.
    got = sqlstate(conn, "SELECT * FROM enkf.synthetic_surveillance(1, 3, '5874897-12-18')")
    assert got[0] == "22008" and "first_week" in got[1] and got[2], got
    rows = conn.execute("SELECT time::text FROM enkf.synthetic_surveillance(1, 2, '5874897-12-24')").fetchall()
    assert [r[0] for r in rows] == ["5874897-12-24", "5874897-12-31"]
    make_data(conn, locations=2, weeks=30)
    conn.execute("SELECT enkf.create_twin('t', 'obs', 'locs', members => 10)")
    got = sqlstate(conn, "SELECT * FROM enkf.assimilate('t', '-infinity')")
    assert got[0] == "22023" and "-infinity is before the first observation" in got[1], got
    # A row at time 'infinity' falls in no week: assimilation up to any date leaves it out,
    # and scoring reads only the weeks that forecasts target.
    conn.execute("INSERT INTO obs VALUES ('infinity', 'L00001', 3)")
    assert conn.execute("SELECT observations FROM enkf.assimilate('t', '2023-03-01')").fetchone() == (44,)
    conn.execute("SELECT count(*) FROM enkf.forecast('t')")
    assert conn.execute("SELECT observations FROM enkf.assimilate('t', 'infinity')").fetchone() == (16,)
    assert len(conn.execute("SELECT * FROM enkf.score('t')").fetchall()) == 8
