"""Minimum necessary access (docs/hipaa.md): the group roles of enkf.create_roles(), row-level
security by location through every function and view, small-cell suppression, and that no
function reads observation rows the caller may not read. Synthetic data only."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from support.data import make_data
from support.errors import sqlstate


def login(cluster, dbname, role):
    return psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True)


@pytest.fixture()
def secured(cluster, conn, dbname):
    """A twin over 3 synthetic locations, assimilated and forecast by the owner, and login
    roles of each kind granted only the first location."""
    make_data(conn, locations=3, weeks=60)
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 20)")
    conn.execute("SELECT * FROM enkf.assimilate('tw', '2023-11-01')")
    conn.execute("SELECT * FROM enkf.forecast('tw')")
    conn.execute("SELECT * FROM enkf.create_roles()")
    locs = [r[0] for r in conn.execute("SELECT location FROM locs ORDER BY 1").fetchall()]
    tag = uuid.uuid4().hex[:6]
    roles = {kind: f"{kind}_{tag}" for kind in ("reader", "analyst", "operator", "admin")}
    for kind, role in roles.items():
        conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE enkf_{kind}")
        conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, %s)", (role, locs[0]))
    # Scoring and assimilation read the observation table under the caller: its owner grants it.
    conn.execute(f"GRANT SELECT ON obs, locs TO {roles['analyst']}, {roles['operator']}, {roles['admin']}")
    # Readers read no table: the twin's results are published to them.
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins", (roles["reader"],))
    yield roles, locs
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        for role in roles.values():
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_roles_grant_nothing_to_public_and_nothing_runs_as_definer(conn):
    conn.execute("SELECT * FROM enkf.create_roles()")
    again = conn.execute("SELECT role, created FROM enkf.create_roles()").fetchall()
    assert [r[0] for r in again] == ["enkf_reader", "enkf_analyst", "enkf_operator", "enkf_admin"]
    assert not any(r[1] for r in again)  # idempotent
    # Only a DBA may call it: to anyone else it is not even executable.
    conn.execute("CREATE ROLE nobody_in_particular")
    conn.execute("SET ROLE nobody_in_particular")
    assert sqlstate(conn, "SELECT * FROM enkf.create_roles()")[0] == "42501"
    assert sqlstate(conn, "SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1])")[0] == "42501"
    conn.execute("RESET ROLE")
    conn.execute("DROP ROLE nobody_in_particular")
    assert conn.execute(
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'enkf\\_%' AND (rolcanlogin OR rolsuper OR rolcreaterole)"
    ).fetchone()[0] == 0
    public_functions = conn.execute(
        """SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'enkf'::regnamespace
              AND has_function_privilege('public', p.oid, 'EXECUTE')"""
    ).fetchall()
    assert public_functions == []
    assert not conn.execute("SELECT has_schema_privilege('public', 'enkf', 'USAGE')").fetchone()[0]
    public_tables = conn.execute(
        """SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'enkf'::regnamespace
              AND c.relkind IN ('r', 'v', 'S')
              AND has_table_privilege('public', c.oid, 'SELECT,INSERT,UPDATE,DELETE')"""
    ).fetchall()
    assert public_tables == []
    definers = conn.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'enkf'::regnamespace AND prosecdef"
    ).fetchall()
    assert definers == []


BI_VIEWS = ["hubverse_forecasts", "forecast_quantiles", "state_estimates", "forecast_summary", "observed_counts"]


def locations_seen(c, relation):
    return sorted({r[0] for r in c.execute(f"SELECT location FROM enkf.{relation}").fetchall()})


def test_analyst_sees_only_granted_locations(cluster, dbname, secured, conn):
    roles, locs = secured
    # The owner sees everything.
    for view in BI_VIEWS:
        assert locations_seen(conn, view) == locs, view
    with login(cluster, dbname, roles["analyst"]) as a:
        for view in BI_VIEWS + ["forecasts"]:
            assert locations_seen(a, view) == [locs[0]], view
        assert {r[0] for r in a.execute("SELECT location FROM enkf.score('tw')").fetchall()} == {locs[0]}
        assert a.execute("SELECT locations_assimilated FROM enkf.twin_summary").fetchone()[0] == 1
        # Raw analyses (with raw counts) and writes are for operators.
        assert sqlstate(a, "SELECT count(*) FROM enkf.checkpoints")[0] == "42501"
        assert sqlstate(a, "SELECT * FROM enkf.assimilate('tw')")[0] == "42501"
        assert sqlstate(a, "SELECT * FROM enkf.forecast('tw')")[0] == "42501"
        # Nor can an analyst grant themselves more locations.
        assert sqlstate(a, "INSERT INTO enkf.location_grants VALUES (current_user::text::regrole, '*')")[0] == "42501"
        assert a.execute("SELECT count(*) FROM enkf.location_grants").fetchone()[0] == 1
        # The suppression threshold is the DBA's.
        assert sqlstate(a, "SET enkf.suppression_threshold = 1")[0] == "42501"


def test_reader_gets_publication_views_only(cluster, dbname, secured):
    roles, locs = secured
    with login(cluster, dbname, roles["reader"]) as r:
        for view in ["hubverse_forecasts", "forecast_summary", "observed_counts"]:
            assert locations_seen(r, view) == [locs[0]], view
        for relation in ["forecast_quantiles", "state_estimates", "forecasts", "checkpoints", "runs"]:
            assert sqlstate(r, f"SELECT 1 FROM enkf.{relation} LIMIT 1")[0] == "42501", relation
        # Of the twins, only what twin_summary shows (the columns enkf.outputs_readable reads).
        assert sqlstate(r, "SELECT config FROM enkf.twins")[0] == "42501"
        assert sqlstate(r, "SELECT created_by FROM enkf.twins")[0] == "42501"
        assert r.execute("SELECT name, classification FROM enkf.twins").fetchall() == [("tw", "protected")]
        assert sqlstate(r, "SELECT * FROM enkf.score('tw')")[0] == "42501"


def test_operator_assimilates_only_granted_locations(cluster, dbname, secured, conn):
    roles, locs = secured

    def last_weeks():
        return dict(conn.execute(
            "SELECT location, max(week_end) FROM enkf.checkpoints GROUP BY 1 ORDER BY 1"
        ).fetchall())

    before = last_weeks()
    with login(cluster, dbname, roles["operator"]) as op:
        notices = []
        op.add_notice_handler(lambda d: notices.append(d.message_primary))
        run = op.execute("SELECT * FROM enkf.assimilate('tw', '2023-11-20')").fetchone()
        assert run[1] == 1  # one location
        assert any("2 location(s)" in n for n in notices), notices
        op.execute("SELECT * FROM enkf.forecast('tw')")
        assert locations_seen(op, "checkpoints") == [locs[0]]
        # The policies refuse writes outside the grant even by direct DML.
        assert sqlstate(op, "UPDATE enkf.forecasts SET location = %s", (locs[1],))[0] == "42501"
    after = last_weeks()
    assert after[locs[0]] > before[locs[0]]
    assert after[locs[1]] == before[locs[1]] and after[locs[2]] == before[locs[2]]
    runs = conn.execute("SELECT run_by, locations FROM enkf.runs WHERE kind = 'assimilate' ORDER BY run_id").fetchall()
    assert runs[-1] == (roles["operator"], 1)


def test_observation_table_row_level_security_is_respected(cluster, dbname, secured, conn):
    roles, locs = secured
    op = roles["operator"]
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (op,))
    conn.execute("ALTER TABLE obs ENABLE ROW LEVEL SECURITY")
    conn.execute(f"CREATE POLICY one_state ON obs TO {op} USING (location = %s)".replace("%s", f"'{locs[1]}'"))
    before = dict(conn.execute("SELECT location, max(week_end) FROM enkf.checkpoints GROUP BY 1").fetchall())
    with login(cluster, dbname, op) as c:
        run = c.execute("SELECT * FROM enkf.assimilate('tw', '2023-11-20')").fetchone()
        assert run[1] == 1
    after = dict(conn.execute("SELECT location, max(week_end) FROM enkf.checkpoints GROUP BY 1").fetchall())
    assert after[locs[1]] > before[locs[1]]
    assert after[locs[0]] == before[locs[0]] and after[locs[2]] == before[locs[2]]


def test_no_function_reads_observations_without_select(cluster, dbname, secured, conn):
    roles, locs = secured
    conn.execute(f"REVOKE SELECT ON obs FROM {roles['operator']}, {roles['admin']}")
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (roles["admin"],))
    with login(cluster, dbname, roles["operator"]) as op:
        assert sqlstate(op, "SELECT * FROM enkf.assimilate('tw', '2023-11-20')")[0] == "42501"
        # Nor the twin's results, which follow the table's grants: nothing to forecast or score.
        assert op.execute("SELECT count(*) FROM enkf.checkpoints").fetchone()[0] == 0
        assert op.execute("SELECT count(*) FROM enkf.score('tw')").fetchone()[0] == 0
    with login(cluster, dbname, roles["admin"]) as ad:
        code, message, hint = sqlstate(ad, "SELECT enkf.create_twin('tw2', 'obs', 'locs')")
        assert code == "42501" and "observations" in message and hint
        assert sqlstate(ad, "SELECT count(*) FROM obs")[0] == "42501"
    # Nothing was written by the refused calls.
    assert conn.execute("SELECT count(*) FROM enkf.twins").fetchone()[0] == 1


def test_small_cells_are_withheld_exactly_below_the_threshold(cluster, dbname, conn):
    make_data(conn, locations=2, weeks=30)
    loc = conn.execute("SELECT min(location) FROM locs").fetchone()[0]
    weeks = [r[0] for r in conn.execute("SELECT DISTINCT time FROM obs ORDER BY 1").fetchall()]
    chosen = [0, 1, 2, 10, 11, 12, 250]
    for w, v in zip(weeks[-len(chosen):], chosen):
        conn.execute("UPDATE obs SET value = %s WHERE location = %s AND time = %s", (v, loc, w))
    conn.execute("SELECT enkf.create_twin('sc', 'obs', 'locs', members => 10)")
    conn.execute("SELECT * FROM enkf.assimilate('sc')")

    def shown(c):
        return {
            r[0]: (r[1], r[2])
            for r in c.execute(
                "SELECT observed_raw, observed, suppressed FROM enkf.observed_counts o "
                "JOIN (SELECT location, week_end, observed AS observed_raw FROM enkf.checkpoints) c USING (location, week_end) "
                "WHERE location = %s AND observed_raw = ANY(%s)",
                (loc, [float(v) for v in chosen]),
            ).fetchall()
        }

    got = shown(conn)
    assert got == {0.0: (0.0, False), 1.0: (None, True), 2.0: (None, True), 10.0: (None, True),
                   11.0: (11.0, False), 12.0: (12.0, False), 250.0: (250.0, False)}
    # Every row of the publication views obeys the rule, and forecast_summary too.
    bad = conn.execute(
        """SELECT count(*) FROM enkf.observed_counts o JOIN enkf.checkpoints c USING (location, week_end)
            WHERE (c.observed > 0 AND c.observed < 11) IS DISTINCT FROM (o.suppressed AND c.observed IS NOT NULL)
               OR (o.suppressed AND o.observed IS NOT NULL)"""
    ).fetchone()[0]
    assert bad == 0
    conn.execute("SELECT * FROM enkf.forecast('sc')")
    # A DBA can lower the threshold (CDC WONDER's 10) for a database.
    conn.execute(f'ALTER DATABASE "{dbname}" SET enkf.suppression_threshold = 10')
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as c2:
        got = shown(c2)
        assert got[10.0] == (10.0, False) and got[2.0] == (None, True)
