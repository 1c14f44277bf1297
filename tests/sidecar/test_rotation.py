"""Credential rotation by enkf-sidecar against moto_server and a TLS PostgreSQL 15 cluster:
100 rotations under a continuous login load, a SIGKILL after every step followed by a
restart, and no password in any log."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import psycopg
import pytest

import sidecar_env as se
from pgcluster import free_port


@pytest.fixture(scope="module")
def registry():
    """Secrets and sidecar logs of this module, for the final no-secret check."""
    return {"secrets": [], "sidecars": []}


def make(pg, moto, pki, sidecar_bin, workdir, registry, prefix, **rotation):
    sm = moto.client()
    info = se.setup_rotation(pg, sm, "postgres", prefix)
    sc = se.Sidecar(sidecar_bin, workdir, prefix, se.rotation_config(pki, moto, info["secret_id"], info["app"], **rotation))
    registry["secrets"] += [info["secret_id"], info["master_id"]]
    registry["sidecars"].append(sc)
    return sm, info, sc


def assert_consistent(pg, sm, secret_id, ca):
    """One AWSCURRENT that logs in and matches the database, no AWSPENDING anywhere."""
    st = se.stages(sm, secret_id)
    assert sum("AWSCURRENT" in s for s in st.values()) == 1, st
    assert not any("AWSPENDING" in s for s in st.values()), st
    for stage in ("AWSCURRENT", "AWSPREVIOUS"):
        if any(stage in s for s in st.values()):
            _, s = se.get_secret(sm, secret_id, stage)
            assert se.login(s, ca) == s["username"], stage
            assert se.scram_matches(se.rolpassword(pg, s["username"]), s["password"]), stage


def test_rotation_under_load(pg, moto, pki, sidecar_bin, workdir, registry):
    # previous_grace: a rotation waits until AWSCURRENT is this old before it changes the
    # AWSPREVIOUS user's password (moto's version dates have 1 s resolution: 0.2 s to 1.2 s).
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, registry, "loadapp", previous_grace="1200ms")
    sid, ca = info["secret_id"], pki.path("ca1.crt")
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"logins": 0, "failed": [], "samples": 0, "mismatch": []}

    def client():
        smc = moto.client()
        while not stop.is_set():
            version, s = se.get_secret(smc, sid)
            try:
                se.login(s, ca)
                with lock:
                    stats["logins"] += 1
            except psycopg.OperationalError as e:
                with lock:
                    stats["failed"].append((version, s["username"], str(e)[:300]))

    def sampler():
        # The database password of the AWSCURRENT user must be AWSCURRENT's at every instant:
        # read the secret, the stored verifier, the secret again; compare when both agree.
        smc = moto.client()
        while not stop.is_set():
            v1, s1 = se.get_secret(smc, sid)
            stored = se.rolpassword(pg, s1["username"])
            v2, _ = se.get_secret(smc, sid)
            if v1 == v2:
                ok = se.scram_matches(stored, s1["password"])
                with lock:
                    stats["samples"] += 1
                    if not ok:
                        stats["mismatch"].append((v1, s1["username"]))
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(3)] + [threading.Thread(target=sampler)]
    for t in threads:
        t.start()
    outcomes = []
    t0 = time.time()
    try:
        for _ in range(100):
            r = sc.run("rotate")
            assert r.returncode == 0, r.stderr[-3000:]
            outcomes.append(json.loads(r.stdout))
    finally:
        duration = time.time() - t0
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print(
        f"\n100 rotations in {duration:.1f} s; {stats['logins']} logins with AWSCURRENT, "
        f"{len(stats['failed'])} failed; {stats['samples']} password samples, {len(stats['mismatch'])} mismatches"
    )
    assert stats["failed"] == [], stats["failed"][:5]
    assert stats["mismatch"] == []
    assert stats["logins"] >= 300 and stats["samples"] >= 100, stats
    assert [o["outcome"] for o in outcomes] == ["rotated"] * 100
    users = [o["user"] for o in outcomes]
    assert users[::2] == ["loadapp_clone"] * 50 and users[1::2] == ["loadapp"] * 50
    assert len({o["version"] for o in outcomes}) == 100
    assert_consistent(pg, sm, sid, ca)
    # The clone was created with the original user's memberships.
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        groups = c.execute(
            """SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'loadapp_clone'"""
        ).fetchall()
    assert groups == [("loadapp_group",)]


POINTS = ["createSecret", "setSecret", "testSecret", "finishSecret:current", "finishSecret"]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_after_each_step(point, pg, moto, pki, sidecar_bin, workdir, registry):
    prefix = "crash_" + point.replace(":", "_").lower()
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, registry, prefix)
    sid, ca = info["secret_id"], pki.path("ca1.crt")
    before, _ = se.get_secret(sm, sid)

    r = sc.run("rotate", env={"ENKF_SIDECAR_CRASH_AFTER": point})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])

    st = se.stages(sm, sid)
    pending = [v for v, s in st.items() if "AWSPENDING" in s]
    current, cur = se.get_secret(sm, sid)
    # Whatever the step, clients still log in with AWSCURRENT.
    assert se.login(cur, ca) == cur["username"]
    token = None
    if point in ("createSecret", "setSecret", "testSecret"):
        assert len(pending) == 1 and pending[0] != before and current == before, st
        token = pending[0]
        _, pend = se.get_secret(sm, sid, "AWSPENDING", token)
        try:
            se.login(pend, ca)
            pending_logs_in = True
        except psycopg.OperationalError:
            pending_logs_in = False
        assert pending_logs_in == (point != "createSecret")
    elif point == "finishSecret:current":
        # AWSCURRENT moved, AWSPENDING not yet cleared from it.
        assert pending == [current] and current != before, st
    else:
        assert pending == [] and current != before, st

    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    if token:
        # The same rotation was finished, not a new one started.
        assert out["outcome"] == "resumed" and out["version"] == token, out
        assert se.get_secret(sm, sid)[0] == token
    else:
        assert out["outcome"] == "rotated", out
    assert_consistent(pg, sm, sid, ca)


def test_daemon_resumes_an_interrupted_rotation(pg, moto, pki, sidecar_bin, workdir, registry):
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, registry, "daemonapp", check_interval="1s")
    sid, ca = info["secret_id"], pki.path("ca1.crt")
    r = sc.run("rotate", env={"ENKF_SIDECAR_CRASH_AFTER": "setSecret"})
    assert r.returncode == -signal.SIGKILL
    token = next(v for v, s in se.stages(sm, sid).items() if "AWSPENDING" in s)
    port = free_port()
    sc.start("run", env={"ENKF_SIDECAR_HTTP_LISTEN": f"127.0.0.1:{port}"})
    try:
        deadline = time.time() + 60
        while time.time() < deadline and se.get_secret(sm, sid)[0] != token:
            time.sleep(0.3)
        assert se.get_secret(sm, sid)[0] == token
        metrics = ""
        while time.time() < deadline and 'rotations_total{result="resumed"} 1' not in metrics:
            try:
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        assert 'enkf_sidecar_rotations_total{result="resumed"} 1' in metrics
        assert 'enkf_sidecar_rotations_total{result="failed"} 0' in metrics
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        # Not due again (period 30 days): the daemon leaves the secret alone.
        time.sleep(2.5)
        assert se.get_secret(sm, sid)[0] == token
    finally:
        codes = sc.stop_all()
    assert codes == [0]
    assert any(line.get("message") == "enkf-sidecar stopped" for line in sc.log_lines())
    assert_consistent(pg, sm, sid, ca)


def test_check_and_on_demand_errors(pg, moto, pki, sidecar_bin, workdir, registry):
    sm, info, sc = make(pg, moto, pki, sidecar_bin, workdir, registry, "checkapp")
    r = sc.run("check", env={"ENKF_SIDECAR_SCHEDULER_ENABLED": "true"})
    # The rotation database has no pg_enkf: check says so unless the scheduler is off.
    assert r.returncode == 1 and "enkf.schedule_slots is missing" in r.stdout, r.stdout
    r = sc.run("check", env={"ENKF_SIDECAR_SCHEDULER_ENABLED": "false"})
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "master: enkf_master may create roles" in r.stdout
    # A master without CREATEROLE is reported before any rotation is tried.
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("ALTER ROLE enkf_master NOCREATEROLE")
    try:
        r = sc.run("check", env={"ENKF_SIDECAR_SCHEDULER_ENABLED": "false"})
        assert r.returncode == 1 and "neither CREATEROLE nor SUPERUSER" in r.stdout, r.stdout
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("ALTER ROLE enkf_master CREATEROLE")
    # A missing secret: a clear message and a non-zero exit.
    r = sc.run("check", env={"ENKF_SIDECAR_SECRETS_SECRET_ID": "no/such/secret"})
    assert r.returncode == 1 and "no/such/secret" in r.stdout, r.stdout
    # Unknown settings are refused before anything runs.
    r = sc.run("check", env={"ENKF_SIDECAR_ROTATION_PERIODE": "1d"})
    assert r.returncode == 2 and "ENKF_SIDECAR_ROTATION_PERIODE" in r.stderr
    # While one rotation holds the lock, an on-demand rotation refuses to start.
    fnv = 0x811C9DC5  # the sidecar's lock key: FNV-1a of the secret id, as int4
    for b in info["secret_id"].encode():
        fnv = ((fnv ^ b) * 0x01000193) & 0xFFFFFFFF
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s, %s)", (0x454E4B52, fnv - (1 << 32) if fnv >= 1 << 31 else fnv))
        r = sc.run("rotate")
        assert r.returncode == 1 and "another rotation" in r.stderr, r.stderr[-2000:]
    r = sc.run("rotate")
    assert r.returncode == 0, r.stderr[-2000:]


def test_no_secret_in_any_log(pg, moto, pki, sidecar_bin, workdir, registry):
    if not registry["sidecars"]:  # run alone: make something to look at
        make(pg, moto, pki, sidecar_bin, workdir, registry, "alone")[2].run("rotate")
    sm = moto.client()
    passwords = set()
    for sid in registry["secrets"]:
        passwords |= se.all_passwords(sm, sid)
    # At least one rotation per secret pair: new passwords, not only the initial ones.
    assert len(passwords) > len(registry["secrets"])
    server_log = pg.log_text()
    # The statements were logged (log_statement = 'all'): only verifiers appear in them.
    assert "ALTER ROLE" in server_log and "SCRAM-SHA-256$4096:" in server_log
    logs = {str(sc.log): sc.log.read_text() for sc in registry["sidecars"] if sc.log.exists()}
    assert logs
    leaks = [
        where
        for pw in passwords
        for where, text in [("server log", server_log), *logs.items()]
        if pw in text
    ]
    print(f"\n{len(passwords)} passwords checked against the server log ({len(server_log)} bytes) and {len(logs)} sidecar logs")
    assert leaks == []
