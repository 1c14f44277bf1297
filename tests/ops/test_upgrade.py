"""Upgrades: the previous release (built from the commit in sql/releases.toml) is installed into
a private copy of PostgreSQL 15, holds twins with data, and is updated in place with
ALTER EXTENSION pg_enkf UPDATE after the current package is installed over it. Everything it
kept must survive, assimilation must continue, and the updated schema must be the same as a
fresh install's. On TimescaleDB: 0.2.0 could only be created before TimescaleDB (its install
failed beside it), so the database gets TimescaleDB and an observation hypertable after its
twins, before the update; the fresh database creates TimescaleDB first."""

from __future__ import annotations

import difflib

import psycopg
import pytest
from data import FIRST_WEEK, LOCATIONS, WEEKS, WEEKS_BEFORE, arrive_new_data, load_surveillance, make_twins, snapshot, table_columns
from support.data import hypertable
from pgcluster import Cluster
from pgops import PgInstall, current_package, current_version, describe_extension, previous_release, release_package


@pytest.fixture(scope="module")
def upgraded(storage):
    """Database `upgraded`: the previous release with twins and data, then the current package
    installed and ALTER EXTENSION pg_enkf UPDATE run in a new session. Database `fresh`: a
    plain CREATE EXTENSION of the current version. Both on one cluster of a private
    PostgreSQL installation."""
    prev = previous_release()
    old_pkg = release_package(prev)  # a few minutes the first time, cached after
    new_pkg = current_package()
    pg = PgInstall()
    cluster = None
    try:
        pg.install(old_pkg)
        cluster = Cluster(pg_bin=pg.bin, conf=storage.conf()).start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE upgraded")
            admin.execute("CREATE DATABASE fresh")
        with psycopg.connect(cluster.dsn("upgraded"), autocommit=True) as conn:
            conn.execute(f"CREATE EXTENSION pg_enkf VERSION '{prev}'")
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_enkf'").fetchone()[0] == prev
            load_surveillance(conn)
            make_twins(conn)
            if storage.timescaledb:
                conn.execute("CREATE EXTENSION timescaledb")
                assert hypertable(conn, "obs")
            before = snapshot(conn)
            old_columns = table_columns(conn, [t for t in before if not t.endswith("_seq")])
            old_schema = describe_extension(conn)
        # New sessions load the new library, as after a package upgrade on a running server.
        pg.install(new_pkg)
        with psycopg.connect(cluster.dsn("upgraded"), autocommit=True) as conn:
            conn.execute("ALTER EXTENSION pg_enkf UPDATE")
        with psycopg.connect(cluster.dsn("fresh"), autocommit=True) as conn:
            storage.create_extensions(conn)
        yield {"cluster": cluster, "prev": prev, "before": before, "old_schema": old_schema, "old_columns": old_columns,
               "timescaledb": storage.timescaledb}
    finally:
        if cluster is not None:
            cluster.stop()
        pg.remove()


def test_twins_survive_and_assimilation_continues(upgraded):
    cluster, prev, before, old_columns = upgraded["cluster"], upgraded["prev"], upgraded["before"], upgraded["old_columns"]
    cur = current_version()
    assert all(before[t] for t in ("enkf.twins", "enkf.runs", "enkf.checkpoints", "enkf.forecasts")), before.keys()
    with psycopg.connect(cluster.dsn("upgraded"), autocommit=True) as new:
        assert new.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_enkf'").fetchone()[0] == cur

        # Every twin, run, checkpoint and forecast (and the identity sequences) survives as is
        # (columns added since are new, NULL in old rows).
        after = snapshot(new, list(before), old_columns)
        for table in before:
            assert after[table] == before[table], f"{table} changed by the update from {prev}"

        # Every C function of the updated extension finds its symbol in the new library.
        for (fn,) in new.execute(
            """SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                WHERE l.lanname = 'c' AND p.pronamespace = 'enkf'::regnamespace"""
        ).fetchall():
            new.execute("SELECT fmgr_c_validator(%s::regprocedure)", (fn,))

        # Twins of the old version come out protected, the safe side (docs/hipaa.md); these
        # synthetic counts stand for public data, so their administrator says so, and the twin
        # carries on without re-assimilating (a protected twin would be re-assimilated with its
        # small counts censored: tests/security/test_suppression.py).
        assert {c for (c,) in new.execute("SELECT classification FROM enkf.twins")} == {"protected"}
        new.execute("UPDATE enkf.twins SET classification = 'public_aggregate'")
        # Assimilation continues where it stopped, recorded with the new version.
        last_run_before = max(r[0] for r in before["enkf.runs"])
        arrive_new_data(new)
        run = new.execute("SELECT * FROM enkf.assimilate('alpha')").fetchone()
        assert run[0] > last_run_before
        r = new.execute(
            "SELECT first_week, extension_version, reassimilated FROM enkf.runs WHERE run_id = %s", (run[0],)
        ).fetchone()
        assert r[1] == cur and r[2] == 0
        assert r[0] == new.execute(f"SELECT date '{FIRST_WEEK}' + {WEEKS_BEFORE} * 7").fetchone()[0]
        kept = set(map(repr, before["enkf.checkpoints"]))
        now = set(map(repr, snapshot(new, ["enkf.checkpoints"], old_columns)["enkf.checkpoints"]))
        assert kept < now, "the update or the new assimilation changed or lost a checkpoint"
        assert new.execute(
            "SELECT count(DISTINCT week_end) FROM enkf.checkpoints JOIN enkf.twins USING (twin_id) WHERE name = 'alpha'"
        ).fetchone()[0] == WEEKS
        # The first run after the update fingerprinted the old checkpoints' rows (the revision
        # check compared them week by week, once), as a run of the new version would have.
        assert new.execute(
            """SELECT count(*) FILTER (WHERE rows_print IS NULL OR source_rows IS NULL), count(*)
                 FROM enkf.checkpoints JOIN enkf.twins USING (twin_id) WHERE name = 'alpha'"""
        ).fetchone()[0] == 0
        assert new.execute("SELECT count(*) FROM enkf.forecast('alpha')").fetchone()[0] > 0
        assert new.execute(
            "SELECT count(DISTINCT reference_date) FROM enkf.hubverse_forecasts WHERE model_id = 'alpha'"
        ).fetchone()[0] == 2
        # The twin never run before the update starts from scratch; ids continue.
        assert new.execute("SELECT locations FROM enkf.assimilate('gamma')").fetchone()[0] == LOCATIONS
        new_id = new.execute("SELECT enkf.create_twin('delta', 'obs', 'locs', members => 4)").fetchone()[0]
        assert new_id > max(t[0] for t in before["enkf.twins"])
        assert new.execute("SELECT count(*) FROM enkf.twin_summary").fetchone()[0] == 4
        # What TimescaleDB gives pg_enkf here: time_bucket over the observation hypertable.
        assert new.execute("SELECT enkf.enable_timescaledb()").fetchone()[0] is upgraded["timescaledb"]
        assert new.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent IN ('enkf.checkpoints'::regclass, 'enkf.forecasts'::regclass)"
        ).fetchone()[0] == 0


def test_update_gives_the_schema_of_a_fresh_install(upgraded):
    cluster, prev = upgraded["cluster"], upgraded["prev"]
    cur = current_version()
    with psycopg.connect(cluster.dsn("upgraded"), autocommit=True) as conn:
        upgraded_schema = describe_extension(conn)
    with psycopg.connect(cluster.dsn("fresh"), autocommit=True) as conn:
        fresh_schema = describe_extension(conn)
    assert len(fresh_schema) > 100
    new_since = len(set(fresh_schema) - set(upgraded["old_schema"]))
    print(f"{new_since} catalog lines new or changed since {prev}")
    diff = "\n".join(
        difflib.unified_diff(
            fresh_schema, upgraded_schema, f"CREATE EXTENSION pg_enkf ({cur})", f"{prev} + ALTER EXTENSION UPDATE", lineterm="", n=0
        )
    )
    assert not diff, (
        f"an install of {cur} and an update from {prev} differ: put the missing statements into "
        f"sql/pg_enkf--{prev}--{cur}.sql\n{diff}"
    )


def test_describe_extension_sees_differences(cluster, dbname):
    """The schema comparison is only as good as its description: a changed comment, default,
    grant, policy or function setting must each show up."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        base = describe_extension(conn)
        changes = [
            "COMMENT ON VIEW enkf.run_log IS 'changed'",
            "ALTER TABLE enkf.runs ALTER COLUMN seed SET DEFAULT 1",
            "GRANT SELECT ON enkf.twin_summary TO PUBLIC",
            "CREATE POLICY p ON enkf.twins USING (true)",
            "ALTER FUNCTION enkf.enable_timescaledb() SET work_mem = '1MB'",
            "ALTER FUNCTION enkf.synthetic_surveillance(int4, int4, date, int8, jsonb, int4) STABLE",
            "GRANT EXECUTE ON FUNCTION enkf.drop_twin(text) TO pg_monitor",
            # Flips row-level security, whichever way the current version sets it.
            """DO $$ BEGIN
                 IF (SELECT relrowsecurity FROM pg_class WHERE oid = 'enkf.checkpoints'::regclass) THEN
                     ALTER TABLE enkf.checkpoints DISABLE ROW LEVEL SECURITY;
                 ELSE
                     ALTER TABLE enkf.checkpoints ENABLE ROW LEVEL SECURITY;
                 END IF;
               END $$""",
            "ALTER TABLE enkf.runs SET (fillfactor = 50)",
            "ALTER EXTENSION pg_enkf DROP VIEW enkf.run_log",
            # pg_extension_config_dump() works only inside an extension script.
            "UPDATE pg_extension SET extcondition[1] = 'WHERE false' WHERE extname = 'pg_enkf'",
            "CREATE INDEX x ON enkf.runs (kind)",
        ]
        for sql in changes:
            conn.execute("BEGIN")
            conn.execute(sql)
            changed = describe_extension(conn)
            conn.execute("ROLLBACK")
            assert changed != base, sql
        assert describe_extension(conn) == base
