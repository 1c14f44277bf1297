"""Access control of the credential rotation against a hostile colleague (someone who can write
the application secret but is not a DBA): only the configured pair of logins is ever changed; a
tampered user name, a privileged role or a NOLOGIN role is refused with a clear log line and the
role left as it was; the clone is an exact copy of rotation.user after every rotation
(memberships added and revoked, settings, direct grants, location grants); the master's
statements time out; the grace wait is decided under the rotation lock; /healthz reports a
failed or refused rotation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import psycopg
import pytest

import sidecar_env as se
from pathlib import Path

from pgcluster import free_port


@pytest.fixture(scope="module")
def pg(pki):
    """As the shared cluster, with pgaudit loaded so that pgaudit.log is a real setting."""
    c = se.tls_cluster(pki, conf={"shared_preload_libraries": "'pgaudit'"})
    yield c
    c.stop()


def admin(pg, db="postgres"):
    return psycopg.connect(pg.dsn(db), autocommit=True)


def pg_enkf_available(pg) -> bool:
    with admin(pg) as a:
        return a.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_enkf'").fetchone()[0] == 1


def make(pg, moto, pki, sidecar_bin, workdir, prefix, dbname="postgres", **rotation):
    """Roles <prefix>_group, <prefix> (in the group) and enkf_master; the application secret
    (in `dbname`) and a sidecar configured with rotation.user = <prefix>."""
    sm = moto.client()
    info = se.setup_rotation(pg, sm, dbname, prefix)
    sc = se.Sidecar(sidecar_bin, workdir, prefix, se.rotation_config(pki, moto, info["secret_id"], prefix, **rotation))
    return sm, info, sc


def role_state(pg, role, db="postgres") -> dict | None:
    """Everything the rotation may change about a role, read as superuser independently of the
    sidecar's own queries."""
    with admin(pg, db) as a:
        r = a.execute(
            "SELECT oid, rolpassword, rolcanlogin, rolinherit, rolconnlimit FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
        if r is None:
            return None
        oid = r[0]
        members = a.execute(
            """SELECT g.rolname, m.admin_option FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                WHERE m.member = %s ORDER BY 1""",
            (oid,),
        ).fetchall()
        settings = a.execute(
            """SELECT coalesce(d.datname, '*'), s.setconfig FROM pg_db_role_setting s
                 LEFT JOIN pg_database d ON d.oid = s.setdatabase WHERE s.setrole = %s ORDER BY 1""",
            (oid,),
        ).fetchall()
        privileges = a.execute(
            """SELECT DISTINCT x.obj, x.privilege_type, x.is_grantable FROM (
                   SELECT c.oid::regclass::text AS obj, (aclexplode(c.relacl)).* FROM pg_class c
                   UNION ALL
                   SELECT c.oid::regclass::text || '.' || att.attname, (aclexplode(att.attacl)).*
                     FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid
                   UNION ALL
                   SELECT p.oid::regprocedure::text, (aclexplode(p.proacl)).* FROM pg_proc p
                   UNION ALL
                   SELECT 'schema ' || n.nspname, (aclexplode(n.nspacl)).* FROM pg_namespace n
                   UNION ALL
                   SELECT 'database ' || d.datname, (aclexplode(d.datacl)).* FROM pg_database d
                    WHERE d.datname = current_database()) x
                WHERE x.grantee = %s ORDER BY 1, 2""",
            (oid,),
        ).fetchall()
        locations = None
        if a.execute("SELECT to_regclass('enkf.location_grants')").fetchone()[0]:
            locations = sorted(
                row[0]
                for row in a.execute(
                    "SELECT location FROM enkf.location_grants WHERE role::text = %s", (role,)
                ).fetchall()
            )
    return {
        "password": r[1],
        "login": r[2],
        "inherit": r[3],
        "connlimit": r[4],
        "members": members,
        "settings": [(d, sorted(c)) for d, c in settings],
        "privileges": privileges,
        "locations": locations,
    }


def shared_part(state: dict) -> dict:
    """What the clone must share with rotation.user (not the password or LOGIN)."""
    return {k: v for k, v in state.items() if k not in ("password", "login")}


def log_messages(sc) -> list[dict]:
    return [line for line in sc.log_lines() if "message" in line]


def refused_lines(sc) -> list[str]:
    return [str(line.get("error", "")) for line in log_messages(sc) if line["message"] in ("rotate: refused", "rotation refused; /healthz reports it until a check succeeds")]


def put_current(sm, secret_id, secret: dict) -> str:
    """A new version labelled AWSCURRENT, as someone with PutSecretValue could write it."""
    r = sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(secret), VersionStages=["AWSCURRENT"])
    return r["VersionId"]


# --- a tampered secret -------------------------------------------------------------------------


def test_tampered_username_is_refused_and_the_victim_unchanged(pg, moto, pki, sidecar_bin, workdir):
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "tamp")
    sid = info["secret_id"]
    victim_pw = se.new_password()
    with admin(pg) as a:
        a.execute("CREATE ROLE victim_group NOLOGIN")
        a.execute(f"CREATE ROLE victim LOGIN PASSWORD '{se.scram_verifier(victim_pw)}' IN ROLE victim_group")
    before = role_state(pg, "victim")
    _, cur = se.get_secret(sm, sid)
    # The old sidecar took the alternate of whatever name the secret held: victim_clone -> victim.
    put_current(sm, sid, {**cur, "username": "victim_clone", "password": "whatever-the-attacker-wants"})

    r = sc.run("rotate")
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "refusing to rotate" in r.stderr and '"victim_clone"' in r.stderr, r.stderr[-2000:]
    assert 'rotation.user "tamp"' in r.stderr, r.stderr[-2000:]
    lines = refused_lines(sc)
    assert lines and "victim_clone" in lines[-1] and "No role was changed" in lines[-1], lines
    # The victim: same password verifier, same LOGIN, same memberships; no clone of it.
    assert role_state(pg, "victim") == before
    assert se.login({**cur, "username": "victim", "password": victim_pw}, pki.path("ca1.crt")) == "victim"
    assert role_state(pg, "victim_clone") is None
    # Nothing was written to the secret either.
    assert not any("AWSPENDING" in s for s in se.stages(sm, sid).values())
    # `check` reports the same refusal.
    r = sc.run("check", env={"ENKF_SIDECAR_SCHEDULER_ENABLED": "false"})
    assert r.returncode == 1 and "FAILED rotation pair" in r.stdout and "victim_clone" in r.stdout, r.stdout


def test_tampered_pending_version_is_refused(pg, moto, pki, sidecar_bin, workdir):
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "tpend")
    sid = info["secret_id"]
    victim_pw = se.new_password()
    with admin(pg) as a:
        a.execute(f"CREATE ROLE victim2 LOGIN PASSWORD '{se.scram_verifier(victim_pw)}'")
    before = role_state(pg, "victim2")
    _, cur = se.get_secret(sm, sid)
    # An "interrupted rotation" planted by the attacker: AWSPENDING naming the victim.
    sm.put_secret_value(
        SecretId=sid, ClientRequestToken="00000000-0000-4000-8000-000000000001",
        SecretString=json.dumps({**cur, "username": "victim2", "password": "attacker-chosen-password-123"}),
        VersionStages=["AWSPENDING"],
    )
    r = sc.run("rotate")
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "refusing to rotate" in r.stderr and "AWSPENDING" in r.stderr and '"victim2"' in r.stderr, r.stderr[-2000:]
    assert role_state(pg, "victim2") == before
    assert se.get_secret(sm, sid)[1]["username"] == "tpend"


# --- privileged and NOLOGIN roles ----------------------------------------------------------------


@pytest.mark.parametrize(
    "case, setup, reason",
    [
        ("createdb_group", ["CREATE ROLE {p}_admins NOLOGIN CREATEDB", "GRANT {p}_admins TO {p}"],
         'is a member of "{p}_admins", which has CREATEDB'),
        ("bypassrls", ["ALTER ROLE {p} BYPASSRLS"], '"{p}" has BYPASSRLS'),
        ("indirect_createrole", ["CREATE ROLE {p}_top NOLOGIN CREATEROLE", "CREATE ROLE {p}_mid NOLOGIN IN ROLE {p}_top",
                                 "GRANT {p}_mid TO {p}"], 'is a member of "{p}_top", which has CREATEROLE'),
        ("server_files", ["GRANT pg_read_server_files TO {p}"], "access to server files"),
        ("superuser_clone", ["CREATE ROLE {p}_clone LOGIN SUPERUSER"], '"{p}_clone" has SUPERUSER'),
        ("nologin_clone", ["CREATE ROLE {p}_clone NOLOGIN", "GRANT {p}_clone TO {p}_group"], "exists as a NOLOGIN role"),
    ],
)
def test_privileged_or_nologin_targets_are_refused(case, setup, reason, pg, moto, pki, sidecar_bin, workdir):
    p = "pr_" + case
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, p)
    with admin(pg) as a:
        for s in setup:
            a.execute(s.format(p=p))
    before = {r: role_state(pg, r) for r in (p, f"{p}_clone")}
    r = sc.run("rotate")
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "refusing to rotate" in r.stderr and reason.format(p=p) in r.stderr, r.stderr[-2000:]
    assert "No role was changed" in r.stderr
    # Both roles exactly as they were: no password, LOGIN, membership or new role.
    assert {r: role_state(pg, r) for r in (p, f"{p}_clone")} == before
    assert any(reason.format(p=p) in line for line in refused_lines(sc))


# --- the clone is a copy of rotation.user ----------------------------------------------------------


def test_clone_is_a_copy_of_the_user_after_every_rotation(pg, moto, pki, sidecar_bin, workdir):
    db = "mirror"
    with admin(pg) as a:
        a.execute(f"CREATE DATABASE {db}")
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "mir", dbname=db)
    sid, ca = info["secret_id"], pki.path("ca1.crt")
    with admin(pg, db) as a:
        # Objects owned by a role the master belongs to, so it can grant and revoke on them.
        a.execute("CREATE ROLE mir_owner NOLOGIN")
        a.execute("GRANT mir_owner TO enkf_master")
        a.execute("CREATE SCHEMA s AUTHORIZATION mir_owner")
        for ddl in ("CREATE TABLE s.t1 (a int)", "CREATE TABLE s.t2 (a int, b int)",
                    "CREATE FUNCTION s.f(int) RETURNS int LANGUAGE sql AS 'SELECT $1'"):
            a.execute(ddl)
        a.execute("ALTER TABLE s.t1 OWNER TO mir_owner")
        a.execute("ALTER TABLE s.t2 OWNER TO mir_owner")
        a.execute("ALTER FUNCTION s.f(int) OWNER TO mir_owner")
        a.execute("REVOKE EXECUTE ON FUNCTION s.f(int) FROM PUBLIC")
        for g in ("mir_keep", "mir_revoked", "mir_admin"):
            a.execute(f"CREATE ROLE {g} NOLOGIN")
        a.execute("GRANT mir_keep, mir_revoked TO mir")
        a.execute("GRANT SELECT ON s.t1 TO mir")
        a.execute("GRANT USAGE ON SCHEMA s TO mir")
        # A superuser-only setting the master may copy once granted (PostgreSQL 15).
        a.execute("GRANT SET ON PARAMETER pgaudit.log TO enkf_master")

    # Rotation 1: mir -> mir_clone, created as a copy.
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["user"] == "mir_clone"
    assert shared_part(role_state(pg, "mir_clone", db)) == shared_part(role_state(pg, "mir", db))
    assert ("mir_revoked", False) in role_state(pg, "mir_clone", db)["members"]

    # The DBA changes mir while mir_clone is the current user: a revoked membership and grant,
    # new settings (global and per database), grants of each kind, a connection limit. And
    # someone gives the clone directly what mir does not have.
    with admin(pg, db) as a:
        a.execute("REVOKE mir_revoked FROM mir")
        a.execute("GRANT mir_admin TO mir WITH ADMIN OPTION")
        a.execute("REVOKE SELECT ON s.t1 FROM mir")
        a.execute("GRANT INSERT ON s.t2 TO mir")
        a.execute("GRANT UPDATE (b) ON s.t2 TO mir")
        a.execute("GRANT EXECUTE ON FUNCTION s.f(int) TO mir")
        a.execute("ALTER ROLE mir SET idle_session_timeout = '5min'")
        a.execute("ALTER ROLE mir SET statement_timeout = '30s'")
        a.execute("ALTER ROLE mir SET search_path = '$user', public, \"we ird\"")
        a.execute(f"ALTER ROLE mir IN DATABASE {db} SET pgaudit.log = 'read, write'")
        a.execute("ALTER ROLE mir CONNECTION LIMIT 7")
        a.execute("ALTER ROLE mir_clone SET work_mem = '64MB'")
        a.execute("SET ROLE mir_owner")
        a.execute("GRANT DELETE ON s.t2 TO mir_clone")
        a.execute("RESET ROLE")
    user = role_state(pg, "mir", db)
    assert ("mir_revoked", False) not in user["members"] and ("mir_admin", True) in user["members"]

    # Rotation 2: mir gets the new password; mir_clone (current until now) is synchronized too.
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["user"] == "mir"
    clone = role_state(pg, "mir_clone", db)
    assert shared_part(clone) == shared_part(role_state(pg, "mir", db))
    assert ("mir_revoked", False) not in clone["members"]
    assert ("mir_admin", True) in clone["members"]
    assert clone["connlimit"] == 7
    assert ("*", sorted(['idle_session_timeout=5min', 'statement_timeout=30s',
                         'search_path="$user", public, "we ird"'])) in clone["settings"]
    assert (db, ["pgaudit.log=read, write"]) in clone["settings"]
    assert not any("work_mem" in str(s) for s in clone["settings"])
    privs = {(o, p) for o, p, _ in clone["privileges"]}
    assert {("s.t2", "INSERT"), ("s.t2.b", "UPDATE"), ("s.f(integer)", "EXECUTE"), ("schema s", "USAGE")} <= privs
    assert ("s.t1", "SELECT") not in privs and ("s.t2", "DELETE") not in privs

    # Rotation 3: back to the clone, which logs in and behaves as mir does.
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]
    _, cur = se.get_secret(sm, sid)
    assert cur["username"] == "mir_clone"
    assert shared_part(role_state(pg, "mir_clone", db)) == shared_part(role_state(pg, "mir", db))
    with psycopg.connect(host=cur["host"], port=cur["port"], user=cur["username"], password=cur["password"],
                         dbname=db, sslmode="verify-full", sslrootcert=str(ca)) as c:
        shown = c.execute("SELECT current_setting('idle_session_timeout'), current_setting('search_path'), "
                          "current_setting('pgaudit.log'), pg_has_role('mir_revoked', 'MEMBER')").fetchone()
    assert shown == ("5min", '"$user", public, "we ird"', "read, write", False)
    # The log names every statement that changed the clone.
    changes = " ".join(str(x.get("changes", "")) for x in log_messages(sc) if x["message"].startswith("setSecret:"))
    assert 'REVOKE "mir_revoked" FROM "mir_clone" CASCADE' in changes, changes


def test_a_copy_the_master_cannot_make_stops_the_rotation(pg, moto, pki, sidecar_bin, workdir):
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "nocopy")
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]  # nocopy -> nocopy_clone
    with admin(pg) as a:
        # Owned by postgres: the master (CREATEROLE only) cannot grant it to the clone.
        a.execute("CREATE TABLE nocopy_private (a int)")
        a.execute("GRANT SELECT ON nocopy_private TO nocopy")
    before = {r: role_state(pg, r) for r in ("nocopy", "nocopy_clone")}
    r = sc.run("rotate")  # nocopy_clone -> nocopy: the password change rolls back with the copy
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "cannot make the clone a copy of rotation.user" in r.stderr, r.stderr[-2000:]
    # Either the GRANT fails outright or, where the master holds some privilege, it only
    # warns and the read-back names the difference.
    assert ("permission denied for table nocopy_private" in r.stderr
            or "SELECT ON TABLE public.nocopy_private: nocopy yes, nocopy_clone no" in r.stderr), r.stderr[-2000:]
    assert {r: role_state(pg, r) for r in ("nocopy", "nocopy_clone")} == before
    # Once the master can make it, the same (resumed) rotation completes.
    with admin(pg) as a:
        a.execute("GRANT SELECT ON nocopy_private TO enkf_master WITH GRANT OPTION")
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["outcome"] == "resumed"
    assert shared_part(role_state(pg, "nocopy_clone")) == shared_part(role_state(pg, "nocopy"))


def test_location_grants_are_copied(pg, moto, pki, sidecar_bin, workdir):
    if not pg_enkf_available(pg):
        pytest.skip("pg_enkf is not installed into PostgreSQL 15 (the extension side installs it)")
    db = "locgrants"
    with admin(pg) as a:
        a.execute(f"CREATE DATABASE {db}")
    with admin(pg, db) as a:
        a.execute("CREATE EXTENSION pg_enkf")
        a.execute("SELECT * FROM enkf.create_roles()")
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "loc", dbname=db)
    with admin(pg, db) as a:
        a.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('loc', 'NY'), ('loc', 'CA')")
        a.execute("CREATE ROLE loc_clone LOGIN")
        a.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('loc_clone', 'TX'), ('loc_clone', 'NY')")
    # Row-level security hides other roles' grants from a master outside enkf_admin: refused
    # rather than copying an empty set.
    r = sc.run("rotate")
    assert r.returncode == 1 and "cannot see every row of enkf.location_grants" in r.stderr, r.stderr[-2000:]
    assert role_state(pg, "loc_clone", db)["locations"] == ["NY", "TX"]
    with admin(pg, db) as a:
        a.execute("GRANT enkf_admin TO enkf_master")
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]
    assert role_state(pg, "loc_clone", db)["locations"] == ["CA", "NY"]
    assert shared_part(role_state(pg, "loc_clone", db)) == shared_part(role_state(pg, "loc", db))


# --- timeouts, the lock, health ------------------------------------------------------------------


def test_a_blocked_alter_role_times_out(pg, moto, pki, sidecar_bin, workdir):
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "blk", lock_timeout="1s", statement_timeout="3s")
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]  # blk -> blk_clone; the next one changes blk
    before = role_state(pg, "blk")
    with admin(pg) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("ALTER ROLE blk CONNECTION LIMIT 5")  # holds blk's catalog row
        t0 = time.time()
        r = sc.run("rotate", timeout=60)
        took = time.time() - t0
        blocker.execute("ROLLBACK")
    assert r.returncode == 1 and "55P03" in r.stderr, r.stderr[-2000:]
    assert took < 15, took
    assert role_state(pg, "blk") == before
    with admin(pg) as a:
        waiting = a.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'enkf-sidecar' AND wait_event_type = 'Lock'"
        ).fetchone()[0]
    assert waiting == 0
    r = sc.run("rotate")
    assert r.returncode == 0 and json.loads(r.stdout)["outcome"] == "resumed", r.stderr[-2000:]


def test_the_grace_wait_is_decided_under_the_lock(pg, moto, pki, sidecar_bin, workdir):
    grace = 6.0
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "race", previous_grace=f"{int(grace)}s")
    sid = info["secret_id"]
    time.sleep(grace + 1.2)  # AWSCURRENT (race) is old enough: a rotation need not wait
    old_verifier = se.rolpassword(pg, "race")
    # A reads AWSCURRENT (race, old), then pauses before the lock ...
    slow = sc.start("rotate", env={"ENKF_SIDECAR_TEST_PAUSE_BEFORE_LOCK": "4000"})
    deadline = time.time() + 30
    while time.time() < deadline and not any("pausing before the rotation lock" in str(x.get("message")) for x in log_messages(sc)):
        time.sleep(0.1)
    # ... while B rotates race -> race_clone. race is now AWSPREVIOUS: clients that read the
    # secret a moment ago hold its password.
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]
    switched = time.time()
    assert se.get_secret(sm, sid)[1]["username"] == "race_clone"
    assert slow.poll() is None, "A finished before B: make the pause longer"
    # A must see B's rotation under the lock and wait out the grace before changing race.
    changed = None
    while time.time() < switched + 60:
        if se.rolpassword(pg, "race") != old_verifier:
            changed = time.time()
            break
        time.sleep(0.05)
    assert slow.wait(timeout=60) == 0
    assert changed is not None
    # A decided from its read under the lock (race_clone, created a moment ago), not from its
    # first read (race, old): it waited. B never waits (race was old), so the wait is A's.
    waits = [x for x in log_messages(sc) if x["message"].startswith("waiting for rotation.previous_grace")]
    assert len(waits) == 1 and waits[0]["wait_ms"] > 0, waits
    # The grace counts from the new version's creation (createSecret, 1 s resolution in moto)
    # rather than from the switch, hence the margin. Deciding from the first read, A would
    # have changed race's password when its pause ended, about 3 s after the switch.
    assert changed - switched >= grace - 2.5, changed - switched


def get(url):
    try:
        r = urllib.request.urlopen(url, timeout=5)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_health(url, status, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = get(url)
            if last[0] == status:
                return last
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"/healthz did not turn {status}: {last}")


def test_healthz_reports_failed_and_refused_rotations(pg, moto, pki, sidecar_bin, workdir):
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, "hz", check_interval="1s")
    sid = info["secret_id"]
    port = free_port()
    sc.start("run", env={"ENKF_SIDECAR_HTTP_LISTEN": f"127.0.0.1:{port}"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_health(url + "/healthz", 200)
        # Refused: a tampered user name, seen at the next check although no rotation is due.
        _, cur = se.get_secret(sm, sid)
        put_current(sm, sid, {**cur, "username": "postgres_clone"})
        status, body = wait_health(url + "/healthz", 503)
        health = json.loads(body)
        assert health["status"] == "error" and "refusing to rotate" in health["rotation_error"], body
        metrics = get(url + "/metrics")[1]
        assert 'enkf_sidecar_rotations_total{result="refused"}' in metrics
        assert 'enkf_sidecar_rotations_total{result="refused"} 0' not in metrics
        # Restored: healthy again at the next check (not due).
        put_current(sm, sid, cur)
        wait_health(url + "/healthz", 200)
        # Failed: a rotation is due (period 1 s) but the master's password is wrong.
        _, master = se.get_secret(sm, info["master_id"])
        put_current(sm, info["master_id"], {**master, "password": "wrong-" + se.new_password()})
        sc.stop_all()
        sc.start("run", env={"ENKF_SIDECAR_HTTP_LISTEN": f"127.0.0.1:{port}", "ENKF_SIDECAR_ROTATION_PERIOD": "1s"})
        status, body = wait_health(url + "/healthz", 503)
        assert "password authentication failed" in json.loads(body)["rotation_error"], body
        assert 'enkf_sidecar_rotations_total{result="failed"} 0' not in get(url + "/metrics")[1]
    finally:
        codes = sc.stop_all()
    assert all(c == 0 for c in codes), codes


def test_the_documented_manual_install_is_readable_by_the_service(workdir):
    """docs/sidecar.md's install commands, run into a scratch root with the service user
    replaced by `postgres` (an unprivileged user that exists here): the service user must be
    able to read the configuration and the CA file, and nobody else."""
    doc = (se.ROOT / "docs" / "sidecar.md").read_text()
    block = doc.split("## Installing as a service", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    # Under a directory every user may traverse (pytest's own is private to root), so that
    # only the documented modes decide who can read.
    root = Path(tempfile.mkdtemp(prefix="enkf_install_"))
    os.chmod(root, 0o755)
    try:
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "systemd" / "system").mkdir(parents=True)
        (root / "usr" / "local" / "bin").mkdir(parents=True)
        src = workdir / "src"
        (src / "sidecar").mkdir(parents=True)
        (src / "target" / "release").mkdir(parents=True)
        (src / "sidecar" / "enkf-sidecar.example.toml").write_text("[secrets]\n")
        (src / "sidecar" / "enkf-sidecar.service").write_text("[Unit]\n")
        (src / "rds-ca.pem").write_text("pem\n")
        (src / "target" / "release" / "enkf-sidecar").write_text("#!/bin/sh\n")
        commands = []
        for line in block.splitlines():
            line = line.split("   #", 1)[0].strip()
            if not line or line.startswith("#") or line.startswith(("cargo ", "systemctl", "journalctl", "/usr/local/bin/enkf-sidecar")):
                continue
            if line.startswith(("getent", "useradd", "adduser")) or "enkf-sidecar ||" in line:
                continue  # the user is `postgres` here
            line = line.replace(":enkf-sidecar", ":postgres").replace("-g enkf-sidecar", "-g postgres")
            for d in ("/etc/", "/usr/local/bin/"):
                line = line.replace(" " + d, f" {root}{d}")
            commands.append(line)
        assert any("/etc/enkf-sidecar/enkf-sidecar.toml" in c for c in commands), commands
        subprocess.run(["sh", "-ec", "\n".join(commands)], cwd=src, check=True)
        conf = root / "etc" / "enkf-sidecar" / "enkf-sidecar.toml"
        ca = root / "etc" / "enkf-sidecar" / "db-ca.pem"
        for f in (conf, ca):
            r = subprocess.run(["runuser", "-u", "postgres", "--", "cat", str(f)], capture_output=True, text=True)
            assert r.returncode == 0, (f, r.stderr)
            r = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(f)], capture_output=True, text=True)
            assert r.returncode != 0, f"{f} is readable by any user"
    finally:
        shutil.rmtree(root)
