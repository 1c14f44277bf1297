"""A hostile colleague with a login (docs/hipaa.md, "What a role cannot do"): every attack here
is one a role can try with the privileges it is given, and each must fail or change nothing.

- search_path hijacking: functions, aggregates and operators planted in a schema early on the
  victim's search_path must never run inside pg_enkf, whoever calls it (superuser, operator);
- dangling and mistyped grants neither lock readers out nor pass to a later role of the name;
- small-cell suppression and the source's grants: tests/security/test_suppression.py;
- provenance, analyses, slots and twin definitions cannot be forged or re-pointed.
Synthetic data only."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from support.data import make_data
from support.errors import sqlstate


def login(cluster, dbname, role, hostile_path=False):
    c = psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True)
    if hostile_path:
        # The planted schema first, pg_catalog after it: public's objects shadow the built-ins
        # in every name the session resolves itself.
        c.execute("SET search_path = public, pg_catalog")
    return c


@pytest.fixture()
def roles(cluster, conn, dbname):
    """Login roles of each pg_enkf kind and a plain 'mallory' login with CREATE on public."""
    conn.execute("SELECT * FROM enkf.create_roles()")
    tag = uuid.uuid4().hex[:6]
    names = {kind: f"{kind}_{tag}" for kind in ("reader", "analyst", "operator", "admin", "mallory")}
    for kind, role in names.items():
        member = "" if kind == "mallory" else f" IN ROLE enkf_{kind}"
        conn.execute(f"CREATE ROLE {role} LOGIN{member}")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {names['mallory']}")
    yield names
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        for role in names.values():
            admin.execute(f"DROP ROLE IF EXISTS {role}")


# --- search_path hijacking ---------------------------------------------------------------------

# Objects a role with CREATE on a schema of the victim's search_path can plant: each matches
# (exactly, or better than pg_catalog's polymorphic version) a call pg_enkf makes. Every one
# raises, so that a single execution fails the call it was hijacked into.
TRAPS = """
CREATE FUNCTION public.hijacked() RETURNS void LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked by %', current_user USING ERRCODE = 'P0666'; END $$;
CREATE FUNCTION public.nextval(text) RETURNS int8 LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN 1; END $$;
CREATE FUNCTION public.nextval(regclass) RETURNS int8 LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN 1; END $$;
CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN now(); END $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN now(); END $$;
CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); END $$;
CREATE FUNCTION public.unnest(date[]) RETURNS SETOF date LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); END $$;
CREATE FUNCTION public.unnest(float8[]) RETURNS SETOF float8 LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); END $$;
CREATE FUNCTION public.unnest(int4[]) RETURNS SETOF int4 LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); END $$;
CREATE FUNCTION public.convert_to(text, name) RETURNS bytea LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN ''; END $$;
CREATE FUNCTION public.hashfloat8extended(float8, int8) RETURNS int8 LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN 0; END $$;
CREATE FUNCTION public.array_position(float8[], float8) RETURNS int4 LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN 1; END $$;
CREATE FUNCTION public.format(text, text, text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN ''; END $$;
CREATE FUNCTION public.has_table_privilege(oid, text) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN true; END $$;
CREATE FUNCTION public.row_security_active(regclass) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN false; END $$;
CREATE FUNCTION public.pg_has_role(oid, text) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN true; END $$;
CREATE FUNCTION public.trap_sfunc(float8[], float8) RETURNS float8[] LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN $1; END $$;
CREATE AGGREGATE public.array_agg(float8) (sfunc = public.trap_sfunc, stype = float8[]);
CREATE FUNCTION public.trap_sum(float8, float8) RETURNS float8 LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN 0; END $$;
CREATE AGGREGATE public.sum(float8) (sfunc = public.trap_sum, stype = float8);
CREATE AGGREGATE public.min(date) (sfunc = public.trap_sfunc_d, stype = date);
CREATE FUNCTION public.trap_eq(text, text) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN true; END $$;
CREATE OPERATOR public.= (leftarg = text, rightarg = text, function = public.trap_eq);
CREATE FUNCTION public.trap_geq(float8, float8) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN true; END $$;
CREATE OPERATOR public.>= (leftarg = float8, rightarg = float8, function = public.trap_geq);
CREATE FUNCTION public.trap_arrow(jsonb, text[]) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijacked(); RETURN ''; END $$;
CREATE OPERATOR public.#>> (leftarg = jsonb, rightarg = text[], function = public.trap_arrow);
"""


def plant_traps(cluster, dbname, mallory):
    with login(cluster, dbname, mallory) as m:
        m.execute("CREATE FUNCTION public.trap_sfunc_d(date, date) RETURNS date LANGUAGE plpgsql AS "
                  "$$ BEGIN PERFORM public.hijacked(); RETURN $1; END $$")
        m.execute(TRAPS)
        # The traps do fire when a victim's own query resolves to them.
        with login(cluster, dbname, mallory, hostile_path=True) as v:
            assert sqlstate(v, "SELECT nextval('x')")[0] == "P0666"
            assert sqlstate(v, "SELECT 'a'::text = 'b'::text")[0] == "P0666"


def every_function(c, twin: str, writer: bool):
    """Calls every pg_enkf function and reads every view; returns the SQLSTATEs of refusals."""
    codes = []
    calls = [
        "SELECT enkf.analyze(ARRAY[[1.0, 2.0, 3.0], [2.0, 1.0, 0.5]], ARRAY[1.5], ARRAY[0.5], ARRAY[1])",
        "SELECT enkf.analyze(ARRAY[[1.0, 2.0, 3.0], [2.0, 1.0, 0.5]], ARRAY[1.5], ARRAY[0.5], ARRAY[1], 'enkf', loc_radius => 1)",
        "SELECT count(*) FROM enkf.synthetic_surveillance(2, 5)",
        f"SELECT count(*) FROM enkf.score('{twin}')",
        "SELECT enkf.twin_config('{}')",
        "SELECT count(*) FROM enkf.compliance_report()",
        "SELECT count(*) FROM enkf.hubverse_forecasts",
        "SELECT count(*) FROM enkf.forecast_summary",
        "SELECT count(*) FROM enkf.observed_counts",
        "SELECT count(*) FROM enkf.twin_summary",
        "SELECT count(*) FROM enkf.forecast_quantiles",
        "SELECT count(*) FROM enkf.state_estimates",
        "SELECT count(*) FROM enkf.run_log",
    ]
    if writer:
        calls += [
            f"SELECT * FROM enkf.assimilate('{twin}', '2023-06-01')",
            f"SELECT count(*) FROM enkf.forecast('{twin}')",
            f"SELECT enkf.record_failed_run('{twin}', 'assimilate', CURRENT_TIMESTAMP, '57014')",
            f"SELECT enkf.create_twin('{twin}_2', 'public.obs', 'public.locs', members => 8)",
            f"SELECT enkf.drop_twin('{twin}_2')",
        ]
    for q in calls:
        try:
            c.execute(q).fetchall()
        except psycopg.Error as e:
            assert e.sqlstate != "P0666", f"{q}: {e}"
            codes.append((q, e.sqlstate))
    return codes


def test_planted_functions_and_operators_never_run(cluster, conn, dbname, roles):
    make_data(conn, locations=3, weeks=40)
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 8)")
    conn.execute("SELECT * FROM enkf.assimilate('tw', '2023-05-01')")
    conn.execute("SELECT count(*) FROM enkf.forecast('tw')")
    conn.execute(f"INSERT INTO enkf.location_grants (role, location) VALUES ('{roles['operator']}', '*')")
    conn.execute(f"GRANT SELECT ON obs, locs TO {roles['operator']}")
    plant_traps(cluster, dbname, roles["mallory"])
    # The superuser and the operator, each with the planted schema first on their path.
    with login(cluster, dbname, "postgres", hostile_path=True) as su:
        assert every_function(su, "tw", writer=True) == []
        su.execute("SELECT * FROM enkf.create_roles()")
    with login(cluster, dbname, roles["operator"], hostile_path=True) as op:
        refused = every_function(op, "tw", writer=True)
        # Only what an operator may not do (manage twins) is refused, and for that reason only.
        assert all(code == "42501" for _, code in refused), refused
        assert {q.split("(")[0] for q, _ in refused} == {"SELECT enkf.create_twin", "SELECT enkf.drop_twin"}


def test_install_binds_nothing_planted_beforehand(cluster, roles):
    """The views are bound when the extension is created: objects planted before CREATE
    EXTENSION must not be picked up by them."""
    name = "h_" + uuid.uuid4().hex[:8]
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(cluster.dsn(name), autocommit=True) as db:
            db.execute(f"CREATE ROLE m_{name} LOGIN")
            db.execute(f"GRANT CREATE ON SCHEMA public TO m_{name}")
        plant_traps(cluster, name, f"m_{name}")
        with login(cluster, name, "postgres", hostile_path=True) as db:
            db.execute("CREATE EXTENSION pg_enkf")
        with login(cluster, name, "postgres") as db:
            make_data(db, locations=2, weeks=30)
        with login(cluster, name, "postgres", hostile_path=True) as db:
            db.execute("SELECT enkf.create_twin('tw', 'public.obs', 'public.locs', members => 8)")
            db.execute("SELECT * FROM enkf.assimilate('tw')")
            assert every_function(db, "tw", writer=True) == []
        with login(cluster, name, "postgres") as db:
            # No view of the extension uses a function outside pg_catalog and enkf.
            foreign = db.execute(
                """SELECT DISTINCT d.refobjid::regprocedure::text FROM pg_depend d
                     JOIN pg_rewrite w ON w.oid = d.objid
                     JOIN pg_class v ON v.oid = w.ev_class
                     JOIN pg_proc p ON p.oid = d.refobjid
                    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_proc'::regclass
                      AND v.relnamespace = 'enkf'::regnamespace
                      AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'enkf'::regnamespace)"""
            ).fetchall()
            assert foreign == []
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS m_{name}")


def test_a_schema_named_enkf_made_beforehand_stops_the_install(cluster):
    """The extension creates its schema itself: a role with CREATE on the database that made a
    schema enkf first (to own what lands in it) makes CREATE EXTENSION fail, with nothing
    installed. (This is why the control file names no schema: PostgreSQL would create it
    before the script, and the script could not tell it from a squatter's.)"""
    name = "h_" + uuid.uuid4().hex[:8]
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f"CREATE ROLE s_{name} LOGIN")
        admin.execute(f'GRANT CREATE ON DATABASE "{name}" TO s_{name}')
    try:
        with login(cluster, name, f"s_{name}") as db:
            db.execute("CREATE SCHEMA enkf")
        with psycopg.connect(cluster.dsn(name), autocommit=True) as db:
            with pytest.raises(psycopg.Error) as err:
                db.execute("CREATE EXTENSION pg_enkf")
            assert "is not a member of extension" in str(err.value), str(err.value)
            assert db.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_enkf'").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'enkf'::regnamespace").fetchone()[0] == 0
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS s_{name}")


def test_every_function_pins_its_search_path(conn):
    unpinned = conn.execute(
        """SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'enkf'::regnamespace
              AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
              -- SQL functions the planner must inline cannot carry SET: they qualify every name.
              AND p.oid NOT IN ('enkf.location_visible(text)'::regprocedure, 'enkf.suppressed(float8)'::regprocedure,
                                'enkf.is_member_of(name)'::regprocedure,
                                'enkf.forecast_withheld(text, float8, float8, boolean)'::regprocedure,
                                'enkf.count_withheld(text, float8)'::regprocedure,
                                'enkf.published_quantile(text, float8, float8[], float8[], float8)'::regprocedure,
                                'enkf.slot_is_honest(bigint, timestamptz, text, bigint)'::regprocedure)"""
    ).fetchall()
    assert unpinned == []
    # Those inlined functions name nothing outside pg_catalog and enkf: every identifier in
    # them is schema-qualified (or a column, a parameter or a keyword).
    for (body,) in conn.execute(
        """SELECT prosrc FROM pg_proc WHERE pronamespace = 'enkf'::regnamespace
              AND prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql') AND proconfig IS NULL"""
    ).fetchall():
        assert " = " not in body.replace("OPERATOR(pg_catalog.=)", ""), body


# --- grants of dropped and mistyped roles ------------------------------------------------------


def test_dangling_and_mistyped_grants(cluster, conn, dbname, roles):
    make_data(conn, locations=3, weeks=40)
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 8)")
    conn.execute("SELECT * FROM enkf.assimilate('tw')")
    conn.execute("SELECT count(*) FROM enkf.forecast('tw')")
    locs = [r[0] for r in conn.execute("SELECT location FROM locs ORDER BY 1").fetchall()]
    reader = roles["reader"]
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, %s)", (reader, locs[0]))
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins", (reader,))
    # A typo is refused at once instead of locking everyone out later.
    assert sqlstate(conn, "INSERT INTO enkf.location_grants (role, location) VALUES ('alcie', %s)", (locs[1],))[0] == "42704"
    assert sqlstate(conn, "INSERT INTO enkf.location_grants (role, location) VALUES (999999::oid::regrole, %s)", (locs[1],))[0] == "42704"
    # A former analyst with grants is dropped the routine way.
    conn.execute("CREATE ROLE former_analyst LOGIN")
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('former_analyst', '*')")
    conn.execute("DROP ROLE former_analyst")
    with login(cluster, dbname, reader) as r:
        for view in ("hubverse_forecasts", "forecast_summary", "observed_counts"):
            seen = {row[0] for row in r.execute(f"SELECT DISTINCT location FROM enkf.{view}").fetchall()}
            assert seen == {locs[0]}, view
        assert r.execute("SELECT count(*) FROM enkf.location_grants").fetchone()[0] == 1
    # A new role under the dropped name inherits nothing.
    conn.execute("CREATE ROLE former_analyst LOGIN IN ROLE enkf_reader")
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, 'former_analyst' FROM enkf.twins")
    try:
        with login(cluster, dbname, "former_analyst") as f:
            assert f.execute("SELECT count(*) FROM enkf.observed_counts").fetchone()[0] == 0
    finally:
        conn.execute("DROP ROLE former_analyst")
    report = dict((r[0], (r[1], r[2])) for r in conn.execute(
        "SELECT control, status, detail FROM enkf.compliance_report()").fetchall())
    assert report["location_grants"][0] == "fail" and "1 grant" in report["location_grants"][1]
    # The grantor is recorded by the database, not by the caller.
    admin = roles["admin"]
    with login(cluster, dbname, admin) as a:
        a.execute("INSERT INTO enkf.location_grants (role, location, granted_by, granted_at) "
                  "VALUES (%s, %s, 'postgres', '2000-01-01')", (reader, locs[2]))
    assert conn.execute(
        "SELECT granted_by::text, granted_at > now() - interval '1 hour' FROM enkf.location_grants WHERE location = %s",
        (locs[2],)).fetchone() == (admin, True)


# --- provenance, slots and twin definitions ----------------------------------------------------


@pytest.fixture()
def operating(cluster, conn, dbname, roles):
    make_data(conn, locations=3, weeks=40)
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 8)")
    conn.execute("SELECT * FROM enkf.assimilate('tw', '2023-05-01')")
    for kind in ("operator", "admin"):
        conn.execute(f"INSERT INTO enkf.location_grants (role, location) VALUES ('{roles[kind]}', '*')")
        conn.execute(f"GRANT SELECT ON obs, locs TO {roles[kind]}")
    return roles


def test_forged_runs_checkpoints_and_slots_are_refused(cluster, conn, dbname, operating):
    op = operating["operator"]
    twin_id = conn.execute("SELECT twin_id FROM enkf.twins WHERE name = 'tw'").fetchone()[0]
    before = conn.execute("SELECT count(*), max(last_week) FROM enkf.runs").fetchone()
    with login(cluster, dbname, op) as o:
        forged = [
            # A run in someone else's name, or claiming a week in 2100 (which would stop every
            # later forecast from writing anything).
            f"""INSERT INTO enkf.runs (twin_id, kind, status, run_by, started_at, config, config_hash,
                                       extension_version, seed, last_week)
                VALUES ({twin_id}, 'assimilate', 'succeeded', 'postgres', now(), '{{}}', '', '0.3.0', 1, '2100-01-01')""",
            f"""INSERT INTO enkf.runs (twin_id, kind, status, started_at, config, config_hash,
                                       extension_version, seed, last_week)
                VALUES ({twin_id}, 'assimilate', 'succeeded', now(), '{{}}', '', '0.3.0', 1, '2100-01-01')""",
            "UPDATE enkf.runs SET status = 'failed'",
            "DELETE FROM enkf.runs",
            f"UPDATE enkf.twins SET origin = '2000-01-01' WHERE twin_id = {twin_id}",
            "DELETE FROM enkf.checkpoints",
            "UPDATE enkf.checkpoints SET observed = 0",
            f"""INSERT INTO enkf.checkpoints (twin_id, location, week_end, run_id, observed, ensemble)
                VALUES ({twin_id}, 'L00001', '2099-01-02', 1, 5, '{{{{1,2}},{{3,4}}}}')""",
            "DELETE FROM enkf.forecasts",
            # A slot in the future marked succeeded, and a past one marked succeeded with no run.
            f"""INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, sidecar)
                VALUES ({twin_id}, now() + interval '7 days', 'succeeded', 1, 'x')""",
            f"""INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, run_id, sidecar)
                VALUES ({twin_id}, now() - interval '1 day', 'succeeded', 1, 999999, 'x')""",
            # A due slot settled as failed, or superseded, with no failed run and no later
            # success: its scheduled run would silently never happen.
            f"""INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, sidecar)
                VALUES ({twin_id}, now() - interval '1 hour', 'failed', 3, 'x')""",
            f"""INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, sidecar)
                VALUES ({twin_id}, now() - interval '1 hour', 'superseded', 1, 'x')""",
        ]
        for q in forged:
            assert sqlstate(o, q)[0] == "42501", q
        # What the functions write carries the caller's identity.
        run_id = o.execute("SELECT run_id FROM enkf.assimilate('tw')").fetchone()[0]
        assert o.execute("SELECT run_by, session_user_name FROM enkf.runs WHERE run_id = %s", (run_id,)).fetchone() == (op, op)
        failed = o.execute("SELECT enkf.record_failed_run('tw', 'forecast', now(), '57014')").fetchone()[0]
        assert o.execute("SELECT status, run_by, detail FROM enkf.runs WHERE run_id = %s", (failed,)).fetchone() == (
            "failed", op, "enkf.forecast failed with SQLSTATE 57014")
        assert sqlstate(o, "SELECT enkf.record_failed_run('tw', 'forecast', now(), 'value 7 in 06')")[0] == "22023"
        # An honest slot: due, succeeded with the run that ran for it.
        o.execute(f"""INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, run_id, sidecar)
                      VALUES ({twin_id}, now() - interval '1 minute', 'succeeded', 1, {run_id}, 'x')""")
        # Settled slots are history.
        assert sqlstate(o, "UPDATE enkf.schedule_slots SET status = 'failed'")[0] == "42501"
        # A failed attempt recorded under the operator's own name may be recorded as such.
        o.execute(f"""INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, next_attempt_at, sidecar)
                      VALUES ({twin_id}, now() - interval '10 minutes', 'retrying', 1, now(), 'x')""")
        assert o.execute("SELECT count(*) FROM enkf.forecast('tw')").fetchone()[0] > 0
    after = conn.execute("SELECT count(*), max(last_week) FROM enkf.runs").fetchone()
    assert after[0] == before[0] + 3 and after[1] < conn.execute("SELECT date '2100-01-01'").fetchone()[0]


def test_twin_definitions_cannot_be_repointed(cluster, conn, dbname, operating):
    admin = operating["admin"]
    conn.execute("CREATE TABLE secret AS SELECT * FROM obs")
    conn.execute(f"REVOKE ALL ON secret FROM {admin}")
    with login(cluster, dbname, admin) as a:
        for q in [
            "UPDATE enkf.twins SET observations = 'secret'::regclass",
            "UPDATE enkf.twins SET value_column = 'population'",
            "UPDATE enkf.twins SET members = 100000",
            "UPDATE enkf.twins SET created_by = current_user::text::regrole",
            "INSERT INTO enkf.twins (name, observations, locations, time_column, location_column, value_column, model, members, config, config_hash, created_by) "
            "SELECT 'copy', 'secret'::regclass, locations, time_column, location_column, value_column, model, members, config, config_hash, created_by FROM enkf.twins",
            "DELETE FROM enkf.twins",
        ]:
            assert sqlstate(a, q)[0] == "42501", q
        # A configuration is checked and normalised as at creation; a rename is allowed.
        assert sqlstate(a, """UPDATE enkf.twins SET config = '{"filter": {"method": "bogus"}}'""")[0] == "22023"
        a.execute("""UPDATE enkf.twins SET config = '{"seed": 7}', name = 'tw2'""")
        cfg, hash_ = a.execute("SELECT config, config_hash FROM enkf.twins").fetchone()
        assert cfg["seed"] == 7 and "filter" in cfg
        assert hash_ == a.execute("SELECT encode(sha256(convert_to(enkf.twin_config('{\"seed\": 7}'), 'UTF8')), 'hex')").fetchone()[0]
        assert sqlstate(a, """UPDATE enkf.twins SET config = '{"week_ends_on": "monday"}'""")[0] == "55000"
        a.execute("UPDATE enkf.twins SET name = 'tw'")
    # The table the twin was created over is dropped and created again under its name: the
    # twin refuses to read the new one.
    conn.execute("ALTER TABLE obs RENAME TO obs_old")
    conn.execute("CREATE TABLE obs AS SELECT * FROM obs_old")
    conn.execute("DROP TABLE obs_old")
    code, message, hint = sqlstate(conn, "SELECT * FROM enkf.assimilate('tw')")
    assert code == "42P01" and "observations" in message and hint
    assert conn.execute("SELECT observations FROM enkf.twin_summary").fetchone()[0] == "(dropped)"
    assert conn.execute("SELECT enkf.drop_twin('tw')").fetchone()[0] is True


def test_runs_stop_when_the_creator_may_no_longer_read(cluster, conn, dbname, operating):
    admin, op = operating["admin"], operating["operator"]
    with login(cluster, dbname, admin) as a:
        a.execute("SELECT enkf.create_twin('mine', 'public.obs', 'public.locs', members => 8)")
    with login(cluster, dbname, op) as o:
        assert o.execute("SELECT locations FROM enkf.assimilate('mine', '2023-03-01')").fetchone()[0] == 3
    conn.execute(f"REVOKE SELECT ON obs FROM {admin}")
    with login(cluster, dbname, op) as o:
        code, message, _ = sqlstate(o, "SELECT * FROM enkf.assimilate('mine')")
        assert code == "42501" and admin in message


def test_a_run_that_waited_for_the_lock_uses_the_configuration_left_behind(cluster, conn, dbname, operating):
    twin_id = conn.execute("SELECT twin_id FROM enkf.twins WHERE name = 'tw'").fetchone()[0]
    holder = psycopg.connect(cluster.dsn(dbname))
    holder.execute("SELECT pg_advisory_xact_lock(x'454E4B46'::int, %s)", (twin_id,))
    holder.execute("""UPDATE enkf.twins SET config = '{"seed": 99}' WHERE twin_id = %s""", (twin_id,))
    result = {}

    def waiting():
        with psycopg.connect(cluster.dsn(dbname), autocommit=True) as w:
            result["run"] = w.execute("SELECT run_id FROM enkf.assimilate('tw')").fetchone()[0]

    t = threading.Thread(target=waiting)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "the run did not wait for the twin's lock"
    holder.commit()
    holder.close()
    t.join(30)
    new_hash = conn.execute("SELECT config_hash FROM enkf.twins WHERE twin_id = %s", (twin_id,)).fetchone()[0]
    assert conn.execute("SELECT config_hash, seed FROM enkf.runs WHERE run_id = %s", (result["run"],)).fetchone() == (new_hash, 99)
