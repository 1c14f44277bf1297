"""Backup and restore: pg_dump -Fc of a database with twins, pg_restore into a new database
(whose CREATE EXTENSION comes from the dump), gives the same twins, configuration, runs,
checkpoints, forecasts and sequences, and assimilation continues where it left off."""

from __future__ import annotations

import subprocess

import psycopg
from data import arrive_new_data, config_tables, load_surveillance, make_twins, snapshot
from pgcluster import PG_BIN
from pgops import describe_extension


def run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stderr}"
    # A clean dump and restore prints nothing; warnings would mean lost objects or data.
    assert r.stderr == "", r.stderr


def test_dump_and_restore_keep_twins(cluster, tmp_path):
    src, dst = "bk_src", "bk_dst"
    conn_args = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"]
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for db in (src, dst):
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {src}")
        admin.execute(f"CREATE DATABASE {dst}")
    try:
        with psycopg.connect(cluster.dsn(src), autocommit=True) as s:
            s.execute("CREATE EXTENSION pg_enkf")
            load_surveillance(s)
            make_twins(s)
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
            schema = describe_extension(s)

        dump = tmp_path / "twins.dump"
        run([str(PG_BIN / "pg_dump"), *conn_args, "-Fc", "-f", str(dump), src])
        run([str(PG_BIN / "pg_restore"), *conn_args, "--exit-on-error", "--single-transaction", "-d", dst, str(dump)])

        with psycopg.connect(cluster.dsn(src), autocommit=True) as s, psycopg.connect(cluster.dsn(dst), autocommit=True) as d:
            assert snapshot(d, tables) == before
            for t, rows in user_data.items():
                assert d.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() == rows
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
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            for db in (src, dst):
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
