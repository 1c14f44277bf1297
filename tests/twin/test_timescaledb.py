"""The twin over what TimescaleDB users have (docs/twin.md, "TimescaleDB"): observation
hypertables with daily, timestamped rows (summed into weeks with time_bucket), a continuous
aggregate that rolls them up to weeks, and hypertables whose chunks are compressed. The same
twin, seed and data give the same checkpoints and forecasts on each, and on a plain table in a
database without TimescaleDB, before and after a revision of the counts. Also: pg_enkf installs
the same in either order of creation, its tables stay plain (row-level security covers them
whole), and what a hypertable's chunks do to row-level security. Synthetic data only."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from support.errors import sqlstate

pytestmark = pytest.mark.timescaledb

LOCATIONS, WEEKS, MEMBERS = 4, 60, 30
CONFIG = '{"seed": 5}'
# Sunday 2022-09-25 00:00 UTC: weeks of the synthetic data (ending on Saturdays, from
# 2022-10-01) start on the Sundays from there.
ORIGIN = "2022-09-25 00:00+00"


@pytest.fixture()
def new_database(cluster):
    names = []

    def make(timescaledb: bool, pg_enkf: bool = True) -> psycopg.Connection:
        name = "ts_" + uuid.uuid4().hex[:10]
        names.append(name)
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        c = psycopg.connect(cluster.dsn(name), autocommit=True)
        if timescaledb:
            c.execute("CREATE EXTENSION timescaledb")
        if pg_enkf:
            c.execute("CREATE EXTENSION pg_enkf")
        return c

    yield make
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def daily_data(conn, table: str) -> None:
    """The synthetic weekly counts spread over daily rows at noon UTC (timestamptz), each week's
    seven rows summing to its count exactly; and the location table."""
    conn.execute(
        f"""CREATE TABLE {table} AS
            SELECT (s.time - 6 + d + time '12:00') AT TIME ZONE 'UTC' AS ts, s.location,
                   CASE WHEN d = 0 THEN s.value - 6 * floor(s.value / 7) ELSE floor(s.value / 7) END AS value
              FROM enkf.synthetic_surveillance({LOCATIONS}, {WEEKS}, '2022-10-01', 3) s, generate_series(0, 6) d"""
    )
    if conn.execute("SELECT to_regclass('locs') IS NULL").fetchone()[0]:
        conn.execute(
            f"""CREATE TABLE locs AS SELECT DISTINCT location, population
                  FROM enkf.synthetic_surveillance({LOCATIONS}, 1, '2022-10-01', 3)"""
        )


def results(conn, twin: str) -> tuple[list, list]:
    """A twin's checkpoints and stored forecasts, without its ids and the fingerprints of the
    rows each week came from (daily rows and weekly sums are different rows)."""
    ckpt = conn.execute(
        """SELECT c.location, c.week_end, c.observed, c.ensemble FROM enkf.checkpoints c
             JOIN enkf.twins t USING (twin_id) WHERE t.name = %s ORDER BY 1, 2""", (twin,)).fetchall()
    fc = conn.execute(
        """SELECT f.model, f.location, f.reference_date, f.horizon, f.target_end_date, f.quantile_levels, f.quantile_values
             FROM enkf.forecasts f JOIN enkf.twins t USING (twin_id) WHERE t.name = %s ORDER BY 1, 2, 3, 4""",
        (twin,)).fetchall()
    return ckpt, fc


def cycle(conn, twin: str, through: str | None = None) -> tuple[list, list]:
    run = conn.execute("SELECT locations, observations FROM enkf.assimilate(%s, coalesce(%s::timestamptz, now()))",
                       (twin, through)).fetchone()
    conn.execute("SELECT count(*) FROM enkf.forecast(%s)", (twin,))
    return run, results(conn, twin)


def test_same_results_on_a_table_a_hypertable_a_continuous_aggregate_and_compressed_chunks(new_database):
    plain = new_database(timescaledb=False)
    daily_data(plain, "obs_daily")
    plain.execute(f"SELECT enkf.create_twin('twin', 'obs_daily', 'locs', 'ts', members => {MEMBERS}, config => '{CONFIG}')")

    ts = new_database(timescaledb=True)
    for table in ("obs_table", "obs_hyper", "obs_compressed"):
        daily_data(ts, table)
    ts.execute("SELECT create_hypertable('obs_hyper', 'ts', chunk_time_interval => interval '14 days', migrate_data => true)")
    ts.execute("SELECT create_hypertable('obs_compressed', 'ts', chunk_time_interval => interval '14 days', migrate_data => true)")
    ts.execute(
        f"""CREATE MATERIALIZED VIEW obs_weekly WITH (timescaledb.continuous) AS
            SELECT time_bucket(interval '7 days', ts, timestamptz '{ORIGIN}') AS week, location, sum(value) AS value
              FROM obs_hyper GROUP BY 1, 2 WITH DATA"""
    )
    ts.execute("ALTER TABLE obs_compressed SET (timescaledb.compress, timescaledb.compress_segmentby = 'location', timescaledb.compress_orderby = 'ts')")
    compressed = ts.execute("SELECT count(compress_chunk(c)) FROM show_chunks('obs_compressed') c").fetchone()[0]
    assert compressed >= 30
    sources = {"table": ("obs_table", "ts"), "hyper": ("obs_hyper", "ts"), "cagg": ("obs_weekly", "week"),
               "compressed": ("obs_compressed", "ts")}
    for name, (table, column) in sources.items():
        ts.execute(f"SELECT enkf.create_twin(%s, %s, 'locs', %s, members => {MEMBERS}, config => '{CONFIG}')",
                   (name, table, column))

    # Through a Wednesday: the week in progress is not assimilated, on any source.
    through = "2023-10-25"
    run, expected = cycle(plain, "twin", through)
    assert run == (LOCATIONS, LOCATIONS * 56) and expected[0] and expected[1]
    for name in sources:
        assert cycle(ts, name, through) == (run, expected), name

    # A count revised (in a compressed chunk too), a week's rows withdrawn, and new weeks: the
    # revision check finds them in every source (the continuous aggregate once refreshed).
    for c, tables in ((plain, ["obs_daily"]), (ts, ["obs_table", "obs_hyper", "obs_compressed"])):
        for table in tables:
            c.execute(f"UPDATE {table} SET value = value + 40 WHERE location = 'L00002' AND ts = '2023-03-15 12:00+00'")
            c.execute(f"DELETE FROM {table} WHERE location = 'L00003' AND ts BETWEEN '2023-06-04' AND '2023-06-11'")
    ts.execute("CALL refresh_continuous_aggregate('obs_weekly', NULL, NULL)")
    run, expected = cycle(plain, "twin")
    assert run[0] == LOCATIONS, run
    assert plain.execute(
        "SELECT reassimilated, first_week::text FROM enkf.runs WHERE kind = 'assimilate' ORDER BY run_id DESC LIMIT 1"
    ).fetchone() == (2, "2023-03-18")
    for name in sources:
        assert cycle(ts, name) == (run, expected), name
    # And as a twin that only ever saw the revised data.
    ts.execute(f"SELECT enkf.create_twin('fresh', 'obs_compressed', 'locs', 'ts', members => {MEMBERS}, config => '{CONFIG}')")
    ts.execute("SELECT * FROM enkf.assimilate('fresh', %s)", (through,))
    ts.execute("SELECT * FROM enkf.assimilate('fresh')")
    assert results(ts, "fresh")[0] == expected[0]
    # pg_enkf's own tables stayed plain tables.
    assert ts.execute("SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_schema = 'enkf'").fetchone()[0] == 0


def test_either_order_of_creation_installs_the_same(new_database):
    """TimescaleDB then pg_enkf, or pg_enkf then TimescaleDB and enable_timescaledb() (as 0.2.0's
    documentation said; idempotent): the same extension, its tables plain, row-level security
    on them."""
    from ops.pgops import describe_extension

    first = new_database(timescaledb=True)
    later = new_database(timescaledb=False)
    later.execute("CREATE EXTENSION timescaledb")
    for _ in range(2):
        assert later.execute("SELECT enkf.enable_timescaledb()").fetchone()[0] is True
    assert describe_extension(first) == describe_extension(later)
    without = new_database(timescaledb=False)
    assert without.execute("SELECT enkf.enable_timescaledb()").fetchone()[0] is False
    for c in (first, later):
        assert c.execute(
            """SELECT bool_and(relrowsecurity) AND NOT bool_or(relkind <> 'r') FROM pg_class
                WHERE oid IN ('enkf.checkpoints'::regclass, 'enkf.forecasts'::regclass)""").fetchone()[0]
        assert c.execute("SELECT status FROM enkf.compliance_report() WHERE control = 'row_level_security'").fetchone()[0] == "pass"


def test_chunks_escape_row_level_security(new_database, cluster):
    """Why pg_enkf's tables are not hypertables, and what the docs tell owners of observation
    hypertables with row-level security: a chunk has its hypertable's grants but not its
    policies, and chunks in TimescaleDB's default schema can be read by anyone granted the
    hypertable. A chunk schema without USAGE stops direct reads, but then a role without USAGE
    cannot insert rows that land in an existing chunk. pg_enkf refuses and reports its own tables
    made hypertables by hand."""
    c = new_database(timescaledb=True)
    db = c.info.dbname
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice_{tag}", f"bob_{tag}"
    try:
        c.execute(f"CREATE ROLE {alice} LOGIN; CREATE ROLE {bob} LOGIN")
        c.execute("CREATE SCHEMA private_chunks")
        for table, schema in (("open_obs", "_timescaledb_internal"), ("closed_obs", "private_chunks")):
            c.execute(f"CREATE TABLE {table} (time date NOT NULL, location text, value int)")
            c.execute(f"SELECT create_hypertable('{table}', 'time', associated_schema_name => '{schema}')")
            c.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            c.execute(f"CREATE POLICY own ON {table} USING (location = current_user)")
            c.execute(f"GRANT SELECT, INSERT ON {table} TO {alice}, {bob}")
            c.execute(f"INSERT INTO {table} VALUES ('2024-01-06', '{alice}', 7)")
        chunk = {t: c.execute(f"SELECT c::text FROM show_chunks('{t}') c").fetchone()[0] for t in ("open_obs", "closed_obs")}
        with psycopg.connect(cluster.dsn(db, user=bob), autocommit=True) as b:
            assert b.execute("SELECT count(*) FROM open_obs").fetchone()[0] == 0
            assert b.execute(f"SELECT location FROM {chunk['open_obs']}").fetchall() == [(alice,)]
            assert b.execute("SELECT count(*) FROM closed_obs").fetchone()[0] == 0
            assert sqlstate(b, f"SELECT location FROM {chunk['closed_obs']}")[0] == "42501"
            # A new chunk is made as the hypertable's owner; an existing one is opened by name.
            b.execute(f"INSERT INTO closed_obs VALUES ('2030-01-05', '{bob}', 1)")
        with psycopg.connect(cluster.dsn(db, user=bob), autocommit=True) as b:
            assert sqlstate(b, f"INSERT INTO closed_obs VALUES ('2030-01-06', '{bob}', 1)")[0] == "42501"

        # pg_enkf's tables made hypertables by hand: refused and reported.
        c.execute("SELECT create_hypertable('enkf.forecasts', 'reference_date')")
        state, message, hint = sqlstate(c, "SELECT enkf.enable_timescaledb()")
        assert state == "55000" and "enkf.forecasts" in message and hint
        status, detail = c.execute(
            "SELECT status, detail FROM enkf.compliance_report() WHERE control = 'row_level_security'").fetchone()
        assert status == "fail" and "forecasts" in detail
    finally:
        c.close()
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS {alice}, {bob}")
