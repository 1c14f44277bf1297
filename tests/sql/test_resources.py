"""Resource attacks: calls whose sizes an analyst or operator controls, each sized so that it
would exhaust the machine's memory (or disk, through a function's result set) if it were
attempted. Each must be refused with 54000 (program_limit_exceeded), naming the argument, with a
hint, within two seconds, and the server must not restart: a backend that died of a failed
allocation would make the postmaster end every session and run crash recovery."""

from __future__ import annotations

import time

import psycopg
import pytest

from support.data import make_data
from support.errors import sqlstate

# Bounds on what a caller's arguments allocate: the same whatever the tables are (conftest.py).
pytestmark = pytest.mark.plain_only

# (what, SQL): every statement runs as an operator (the role with the widest EXECUTE grants).
ATTACKS = [
    # The reproduction: 100,000 observations of a 100,000-member ensemble need an
    # N x m matrix of 10^10 values (80 GB).
    ("analyze: m x N", "SELECT enkf.analyze(array_fill(1.0::float8, ARRAY[1, 100000]), array_fill(0.0::float8, ARRAY[100000]),"
     " array_fill(1.0::float8, ARRAY[100000]), array_fill(1, ARRAY[100000]))"),
    ("analyze: N x N", "SELECT enkf.analyze(array_fill(1.0::float8, ARRAY[1, 20000]), array_fill(0.0::float8, ARRAY[20000]),"
     " array_fill(1.0::float8, ARRAY[20000]), array_fill(1, ARRAY[20000]))"),
    ("analyze enkf: m x m", "SELECT enkf.analyze(array_fill(1.0::float8, ARRAY[2, 3]), array_fill(0.0::float8, ARRAY[20000]),"
     " array_fill(1.0::float8, ARRAY[20000]), array_fill(1, ARRAY[20000]), 'enkf', loc_radius => 1)"),
    ("analyze enkf: m x n", "SELECT enkf.analyze(array_fill(1.0::float8, ARRAY[200000, 2]), array_fill(0.0::float8, ARRAY[1000]),"
     " array_fill(1.0::float8, ARRAY[1000]), array_fill(1, ARRAY[1000]), 'enkf', loc_radius => 1)"),
    ("analyze letkf: m x N", "SELECT enkf.analyze(array_fill(1.0::float8, ARRAY[2, 100000]), array_fill(0.0::float8, ARRAY[1000]),"
     " array_fill(1.0::float8, ARRAY[1000]), array_fill(1, ARRAY[1000]), 'letkf', loc_radius => 1)"),
    ("analyze: ensemble", "SELECT enkf.analyze(array_fill(1.0::float8, ARRAY[3, 4000000]), ARRAY[1.0], ARRAY[1.0], ARRAY[1])"),
    # 20 million observations of a small ensemble (EAKF needs nothing beyond it): the
    # arguments themselves are bounded before they are copied.
    ("analyze: observations", "SELECT enkf.analyze(ARRAY[[1.0, 2.0]], array_fill(0.0::float8, ARRAY[20000000]),"
     " array_fill(1.0::float8, ARRAY[20000000]), array_fill(1, ARRAY[20000000]), 'eakf')"),
    ("synthetic data", "SELECT count(*) FROM enkf.synthetic_surveillance(100000, 5000)"),
    ("forecast: horizons x levels", "SELECT count(*) FROM enkf.forecast('wide', 52,"
     " ARRAY(SELECT g / 1000.0 FROM generate_series(1, 999) g))"),
]


def postmaster_start(conn):
    return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


@pytest.fixture()
def attacker(cluster, conn, dbname):
    make_data(conn, locations=200, weeks=12)
    conn.execute("SELECT enkf.create_twin('wide', 'obs', 'locs', members => 8)")
    conn.execute("SELECT count(*) FROM enkf.assimilate('wide')")
    conn.execute("SELECT * FROM enkf.create_roles()")
    conn.execute("CREATE ROLE attacker LOGIN IN ROLE enkf_operator")
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('attacker', '*')")
    conn.execute("GRANT SELECT ON obs, locs TO attacker")
    yield "attacker"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.execute("DROP ROLE IF EXISTS attacker")


def test_oversized_calls_are_refused_at_once_and_the_server_survives(cluster, conn, dbname, attacker):
    started = postmaster_start(conn)
    log_before = len(cluster.log_text())
    with psycopg.connect(cluster.dsn(dbname, user=attacker), autocommit=True) as a:
        for what, sql in ATTACKS:
            t0 = time.monotonic()
            with pytest.raises(psycopg.Error) as err:
                a.execute(sql).fetchall()
            took = time.monotonic() - t0
            e = err.value
            assert e.sqlstate == "54000", (what, e.sqlstate, str(e))
            assert e.diag.message_hint, what
            assert took < 2.0, f"{what}: refused after {took:.1f} s"
        # The session is still usable.
        assert a.execute("SELECT 1").fetchone() == (1,)
    assert postmaster_start(conn) == started
    log = cluster.log_text()[log_before:]
    assert "terminated by signal" not in log and "server process" not in log, log[-2000:]


def test_twins_whose_members_grow_past_the_limit_are_refused(cluster, conn, dbname, attacker):
    # At creation: 100,000 members x 1,000 forecast draws = 10^8 samples per location.
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as c:
        c.execute("SELECT * FROM enkf.create_roles()")
        c.execute("GRANT enkf_admin TO attacker")
    with psycopg.connect(cluster.dsn(dbname, user=attacker), autocommit=True) as a:
        with pytest.raises(psycopg.Error) as err:
            a.execute("""SELECT enkf.create_twin('huge', 'obs', 'locs', members => 100000,
                                                 config => '{"forecast": {"draws_per_member": 1000}}')""")
        assert err.value.sqlstate == "54000" and "draws_per_member" in str(err.value)
        # Growing an existing twin afterwards is refused too.
        with pytest.raises(psycopg.Error) as err:
            a.execute("UPDATE enkf.twins SET members = 100000 WHERE name = 'wide'")
        assert err.value.sqlstate == "42501"
    # Even a superuser's change, or a lower limit set since, is caught at the next run.
    conn.execute("""UPDATE enkf.twins SET members = 100000, config = '{"forecast": {"draws_per_member": 1000}}'
                    WHERE name = 'wide'""")
    for sql in ("SELECT * FROM enkf.assimilate('wide')", "SELECT count(*) FROM enkf.forecast('wide')"):
        with pytest.raises(psycopg.Error) as err:
            conn.execute(sql)
        assert err.value.sqlstate == "54000", sql


def test_large_allowed_runs_stay_within_the_limit(conn):
    """A long history of a large ensemble is assimilated in rounds that each hold at most
    enkf.max_ensemble_elements values of checkpoints: with a small limit the results are those
    of one unbounded run, bit for bit."""
    make_data(conn, locations=3, weeks=60)
    conn.execute("SELECT enkf.create_twin('a', 'obs', 'locs', members => 40)")
    conn.execute("SELECT enkf.create_twin('b', 'obs', 'locs', members => 40)")
    conn.execute("SELECT * FROM enkf.assimilate('a')")
    # 7 x 40 = 280 values a checkpoint: 1,000 allows 3 location-weeks a round.
    conn.execute("SET enkf.max_ensemble_elements = 1000")
    conn.execute("SELECT * FROM enkf.assimilate('b')")
    # A forecast's trajectories to the season's end (the hub's peak targets) are bounded by the
    # same limit, before they are allocated.
    state, _, hint = sqlstate(conn, "SELECT count(*) FROM enkf.forecast('b')")
    assert state == "54000" and "targets.baseline_paths" in hint, (state, hint)
    conn.execute("RESET enkf.max_ensemble_elements")
    fa = conn.execute("SELECT count(*) FROM enkf.forecast('a')").fetchone()[0]
    fb = conn.execute("SELECT count(*) FROM enkf.forecast('b')").fetchone()[0]
    same = conn.execute(
        """SELECT count(*) FILTER (WHERE a.ensemble = b.ensemble AND a.observed IS NOT DISTINCT FROM b.observed), count(*)
             FROM enkf.checkpoints a JOIN enkf.checkpoints b USING (location, week_end)
            WHERE a.twin_id = (SELECT twin_id FROM enkf.twins WHERE name = 'a')
              AND b.twin_id = (SELECT twin_id FROM enkf.twins WHERE name = 'b')"""
    ).fetchone()
    assert same[0] == same[1] == 3 * 60
    assert fa == fb > 0
