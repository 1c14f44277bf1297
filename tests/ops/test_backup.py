"""Backup and restore: pg_dump -Fc of a database with twins, pg_restore into a new database
(whose CREATE EXTENSION comes from the dump), gives the same twins, configuration, runs,
checkpoints, forecasts and sequences, and assimilation continues where it left off.

On a cluster configured as docs/hipaa.md asks (pgaudit preloaded, logging reads and writes) and,
on TimescaleDB, with TimescaleDB's restore procedure (docs/operations.md): timescaledb_pre_restore()
in the new database, pg_restore, timescaledb_post_restore(); whichever extension was created
first, and with the observation table a hypertable."""

from __future__ import annotations

import re
import subprocess

import psycopg
import pytest
from support.storage import Storage
from data import arrive_new_data, config_tables, load_surveillance, make_twins, snapshot
from pgcluster import Cluster
from pgops import describe_extension

AUDIT = {
    "shared_preload_libraries": "'pgaudit'",
    "pgaudit.log": "'read, write, function, role, ddl'",
    "pgaudit.log_relation": "on",
    "pgaudit.log_parameter": "off",
    "log_line_prefix": "'%m [%p] user=%u db=%d '",
}
# What pg_dump says of every TimescaleDB database: TimescaleDB's own catalog has a foreign-key
# cycle, which its restore procedure (pre_restore) handles.
TIMESCALEDB_DUMP_WARNING = re.compile(
    r"pg_dump: warning: there are circular foreign-key constraints on this table:\n"
    r"pg_dump: detail: continuous_agg\n"
    r"(pg_dump: hint: .*\n)+"
)


@pytest.fixture()
def audited_cluster(storage):
    with Cluster(conf=storage.conf(AUDIT)) as c:
        yield c


@pytest.fixture()
def audited_timescaledb_cluster():
    with Cluster(conf=Storage("timescaledb").conf(AUDIT)) as c:
        yield c


def run(cmd: list[str], timescaledb: bool) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stderr}"
    # A clean dump and restore prints nothing; warnings would mean lost objects or data.
    stderr = TIMESCALEDB_DUMP_WARNING.sub("", r.stderr, count=1) if timescaledb else r.stderr
    assert stderr == "", r.stderr


def dump_and_restore(cluster: Cluster, src: str, dst: str, tmp_path, timescaledb: bool) -> None:
    """pg_dump -Fc of src, restored into the new database dst as docs/operations.md says."""
    conn_args = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"]
    dump = tmp_path / f"{src}.dump"
    run([str(cluster.pg_bin / "pg_dump"), *conn_args, "-Fc", "-f", str(dump), src], timescaledb)
    if timescaledb:
        with psycopg.connect(cluster.dsn(dst), autocommit=True) as d:
            d.execute("CREATE EXTENSION timescaledb")
            d.execute("SELECT timescaledb_pre_restore()")
    run([str(cluster.pg_bin / "pg_restore"), *conn_args, "--exit-on-error", "--single-transaction", "-d", dst, str(dump)],
        timescaledb)
    if timescaledb:
        with psycopg.connect(cluster.dsn(dst), autocommit=True) as d:
            d.execute("SELECT timescaledb_post_restore()")


def check_restored(cluster: Cluster, src: str, dst: str, tmp_path, timescaledb: bool) -> None:
    """Dumps src and restores it into dst; everything pg_enkf keeps is the same, and both
    databases go on assimilating the same way."""
    with psycopg.connect(cluster.dsn(src), autocommit=True) as s:
        tables = config_tables(s)
        # Both identity sequences are registered, so restored twins and runs keep their ids
        # and new ones do not collide with them.
        assert {"enkf.twins", "enkf.twins_twin_id_seq", "enkf.runs", "enkf.runs_run_id_seq", "enkf.checkpoints", "enkf.forecasts"} <= set(tables)
        for seq in s.execute(
            """SELECT s.seqrelid::regclass::text FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
                WHERE c.relnamespace = 'enkf'::regnamespace"""
        ).fetchall():
            assert seq[0] in tables, f"sequence {seq[0]} is not registered with pg_extension_config_dump"
        before = snapshot(s)
        assert all(before[t] for t in ("enkf.twins", "enkf.runs", "enkf.checkpoints", "enkf.forecasts"))
        user_data = {t: s.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in ("obs", "locs")}
        hypertables = s.execute("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL").fetchone()[0] and sorted(
            s.execute("SELECT hypertable_schema, hypertable_name FROM timescaledb_information.hypertables").fetchall())
        schema = describe_extension(s)
        started = s.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    mark = len(cluster.log_text())

    dump_and_restore(cluster, src, dst, tmp_path, timescaledb)

    with psycopg.connect(cluster.dsn(src), autocommit=True) as s, psycopg.connect(cluster.dsn(dst), autocommit=True) as d:
        # The server never went down (pgaudit with TimescaleDB's COPY: docs/operations.md),
        # and pgaudit logged the restore's writes of pg_enkf's tables.
        assert d.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started
        assert "WRITE,INSERT,TABLE,enkf.checkpoints" in cluster.log_text()[mark:]
        assert snapshot(d, tables) == before
        for t, rows in user_data.items():
            assert d.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() == rows
        if hypertables:
            assert sorted(d.execute("SELECT hypertable_schema, hypertable_name FROM timescaledb_information.hypertables").fetchall()) == hypertables
        # Same objects, grants and comments as the original.
        assert describe_extension(d) == schema

        # New data arrives in both; each twin continues from its last analysis, the same
        # way in both databases (same run ids, same seeds, same ensembles).
        for c in (s, d):
            arrive_new_data(c)
        for twin in ("alpha", "beta"):
            last = [
                c.execute(
                    "SELECT max(week_end) FROM enkf.checkpoints JOIN enkf.twins USING (twin_id) WHERE name = %s",
                    (twin,),
                ).fetchone()[0]
                for c in (s, d)
            ]
            assert last[0] == last[1]
            runs = [c.execute("SELECT run_id, locations, observations, first_time FROM enkf.assimilate(%s)", (twin,)).fetchone() for c in (s, d)]
            assert runs[0] == runs[1]
            first_week, reassimilated = d.execute(
                "SELECT first_week, reassimilated FROM enkf.runs WHERE run_id = %s", (runs[1][0],)
            ).fetchone()
            assert reassimilated == 0 and first_week > last[1], (first_week, last[1])
        assert snapshot(d, ["enkf.checkpoints"]) == snapshot(s, ["enkf.checkpoints"])
        fc = [c.execute("SELECT * FROM enkf.forecast('alpha') ORDER BY 1, 2, 3, 5").fetchall() for c in (s, d)]
        assert fc[0] == fc[1] and fc[0]
        ids = [c.execute("SELECT enkf.create_twin('after', 'obs', 'locs', members => 4)").fetchone()[0] for c in (s, d)]
        assert ids[0] == ids[1] > max(t[0] for t in before["enkf.twins"])


def databases(cluster: Cluster, *names: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for db in names:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {db}")


def test_dump_and_restore_keep_twins(audited_cluster, storage, tmp_path):
    """On plain storage, pg_enkf alone; on TimescaleDB, TimescaleDB created first (so pg_enkf's
    install sees it) and the observation table a hypertable."""
    databases(audited_cluster, "bk_src", "bk_dst")
    with psycopg.connect(audited_cluster.dsn("bk_src"), autocommit=True) as s:
        s.execute("CREATE EXTENSION pgaudit")
        storage.create_extensions(s)
        load_surveillance(s)
        make_twins(s)
    check_restored(audited_cluster, "bk_src", "bk_dst", tmp_path, storage.timescaledb)


@pytest.mark.timescaledb
@pytest.mark.parametrize("enabled", [True, False], ids=["enable_timescaledb", "not_enabled"])
def test_restore_when_timescaledb_came_after_pg_enkf(audited_timescaledb_cluster, tmp_path, enabled):
    """pg_enkf first, with twins and data; TimescaleDB created later in that database, the
    observation table then made a hypertable (its rows moved into chunks) and, or not,
    enkf.enable_timescaledb() called, as 0.2.0's documentation said. The dump (whose extensions
    are then created in the other order by the restore) restores and goes on the same way."""
    c = audited_timescaledb_cluster
    databases(c, "late_src", "late_dst")
    with psycopg.connect(c.dsn("late_src"), autocommit=True) as s:
        s.execute("CREATE EXTENSION pgaudit")
        s.execute("CREATE EXTENSION pg_enkf")
        load_surveillance(s)
        make_twins(s)
        s.execute("CREATE EXTENSION timescaledb")
        s.execute("SELECT create_hypertable('obs', 'time', chunk_time_interval => interval '28 days', migrate_data => true)")
        if enabled:
            assert s.execute("SELECT enkf.enable_timescaledb()").fetchone()[0] is True
    check_restored(c, "late_src", "late_dst", tmp_path, True)
