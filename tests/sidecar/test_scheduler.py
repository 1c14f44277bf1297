"""The scheduler of enkf-sidecar over real minutes: three sidecars against one database, twins
due every minute. Each due slot runs exactly once; a failing run is retried with backoff and
each attempt is recorded in enkf.runs; a twin whose slots were missed gets one catch-up run;
SIGTERM stops every sidecar cleanly; the credentials never reach a log."""

from __future__ import annotations

import datetime
import json
import re
import time
import urllib.request

import psycopg
import pytest

import sidecar_env as se
from pgcluster import free_port
from support.data import make_data

EVERY_MINUTE = '{"schedule": {"cron": "* * * * *", "timezone": "America/New_York"}}'


@pytest.fixture(scope="module")
def sched_db(pg):
    db = "sched"
    app_pw = se.new_password()
    with psycopg.connect(pg.dsn(), autocommit=True) as a:
        a.execute(f"CREATE DATABASE {db}")
    with psycopg.connect(pg.dsn(db), autocommit=True) as a:
        a.execute("CREATE EXTENSION pg_enkf")
        a.execute("CREATE ROLE sched_group NOLOGIN")
        a.execute(f"CREATE ROLE sched_app LOGIN PASSWORD '{se.scram_verifier(app_pw)}' IN ROLE sched_group")
        # What an operator of scheduled twins needs (docs/sidecar.md, "Privileges").
        a.execute("GRANT USAGE ON SCHEMA enkf TO sched_group")
        a.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA enkf TO sched_group")
        a.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA enkf TO sched_group")
        if a.execute("SELECT to_regprocedure('enkf.create_roles()')").fetchone()[0]:
            # The extension's operator role, where it exists, carries the EXECUTE grants.
            a.execute("SELECT * FROM enkf.create_roles()")
            a.execute("GRANT enkf_operator TO sched_group")
        if a.execute("SELECT to_regclass('enkf.location_grants')").fetchone()[0]:
            a.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('sched_group', '*')")
        make_data(a, locations=2, weeks=30, seed=11)
        a.execute("CREATE TABLE flaky_obs AS TABLE obs")
        a.execute("GRANT SELECT ON obs, locs, flaky_obs TO sched_group")
        for name, table in (("steady", "obs"), ("flaky", "flaky_obs"), ("late", "obs")):
            a.execute(
                "SELECT enkf.create_twin(%s, %s, 'locs', members => 20, config => %s)",
                (name, table, EVERY_MINUTE),
            )
        # A twin without a schedule: never run by the sidecar.
        a.execute("SELECT enkf.create_twin('manual', 'obs', 'locs', members => 20)")
        # 'late' has existed for ten minutes without a sidecar: ten missed slots.
        a.execute("UPDATE enkf.twins SET created_at = now() - interval '10 minutes' WHERE name = 'late'")
        # 'flaky' fails until its observations are readable again.
        a.execute("REVOKE SELECT ON flaky_obs FROM sched_group")
        # An operator planted in a schema first on the scheduler's default search_path: the
        # sidecar's sessions pin search_path to pg_catalog, so it never runs.
        a.execute("CREATE SCHEMA trap")
        a.execute("""CREATE FUNCTION trap.arrow(jsonb, text) RETURNS text LANGUAGE plpgsql AS
                     $$ BEGIN RAISE EXCEPTION 'hijacked by %', current_user USING ERRCODE = 'P0666'; END $$""")
        a.execute("CREATE OPERATOR trap.#>> (leftarg = jsonb, rightarg = text, function = trap.arrow)")
        a.execute("GRANT USAGE ON SCHEMA trap TO sched_group")
        a.execute("ALTER ROLE sched_app SET search_path = trap, pg_catalog")
    return {"db": db, "password": app_pw}


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def test_three_sidecars_each_slot_once(pg, pki, sidecar_bin, workdir, sched_db):
    db = sched_db["db"]
    creds = workdir / "credentials.json"
    creds.write_text(json.dumps({
        "engine": "postgres", "host": "localhost", "port": pg.port, "username": "sched_app",
        "password": sched_db["password"], "dbname": db,
    }))
    creds.chmod(0o600)
    config = {
        "database": {"tls": "verify-full", "ca_file": str(pki.path("ca1.crt"))},
        "secrets": {"source": "file", "file": str(creds)},
        "scheduler": {"poll_interval": "2s", "backoff_base": "4s", "backoff_max": "20s", "max_attempts": 6},
    }
    once = se.Sidecar(sidecar_bin, workdir, "once", {**config, "http": {"listen": ""}})
    r = once.run("schedule", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    # Three scheduled twins; only 'late' (created "ten minutes ago") is due before the next minute.
    assert summary["twins"] == 3 and summary["due"] <= 3, summary
    if summary["due"] == 1:
        assert summary["succeeded"] == 1, summary

    ports = [free_port() for _ in range(3)]
    sidecars = [
        se.Sidecar(sidecar_bin, workdir, f"sidecar{i}", {**config, "http": {"listen": f"127.0.0.1:{p}"}})
        for i, p in enumerate(ports)
    ]
    t0 = time.time()
    for s in sidecars:
        s.start("run")
    granted_after = None
    try:
        with psycopg.connect(pg.dsn(db), autocommit=True) as a:
            start = a.execute("SELECT now()").fetchone()[0]
            deadline = time.time() + 330
            while time.time() < deadline:
                failed = a.execute(
                    "SELECT count(*) FROM enkf.run_log WHERE twin = 'flaky' AND status = 'failed'"
                ).fetchone()[0]
                if failed >= 2 and granted_after is None:
                    a.execute("GRANT SELECT ON flaky_obs TO sched_group")
                    granted_after = failed
                steady, flaky_ok = a.execute(
                    """SELECT count(*) FILTER (WHERE t.name = 'steady' AND s.status = 'succeeded'),
                              count(*) FILTER (WHERE t.name = 'flaky' AND s.status = 'succeeded')
                         FROM enkf.schedule_slots s JOIN enkf.twins t USING (twin_id)"""
                ).fetchone()
                if steady >= 3 and flaky_ok >= 1:
                    break
                time.sleep(1)
            # Let any slot that is due right now settle before comparing counts.
            time.sleep(5)
            metrics = [urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode() for p in ports]
            health = [urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=5).status for p in ports]
    finally:
        codes = [code for s in sidecars for code in s.stop_all()]
    elapsed = time.time() - t0
    assert codes == [0, 0, 0], codes
    assert health == [200, 200, 200]
    for s in sidecars:
        assert any(line.get("message") == "enkf-sidecar stopped" for line in s.log_lines())

    with psycopg.connect(pg.dsn(db), autocommit=True) as a:
        slots = a.execute(
            """SELECT t.name, s.slot, s.status, s.attempts, s.run_id, s.sidecar, s.last_error
                 FROM enkf.schedule_slots s JOIN enkf.twins t USING (twin_id) ORDER BY 1, 2"""
        ).fetchall()
        runs = a.execute(
            """SELECT twin, kind, status, run_by, detail FROM enkf.run_log
                WHERE twin IN ('steady', 'flaky', 'late') ORDER BY run_id"""
        ).fetchall()
    by_twin = {}
    for name, slot, status, attempts, run_id, sidecar, err in slots:
        by_twin.setdefault(name, []).append((slot, status, attempts, run_id, sidecar, err))

    # Exactly once: every slot of 'steady' succeeded at its first attempt, slots are whole
    # consecutive minutes (none skipped, none twice), one assimilation and one forecast each.
    steady = by_twin["steady"]
    assert len(steady) >= 3
    assert all(s[1] == "succeeded" and s[2] == 1 for s in steady), steady
    gaps = {(b[0] - a_[0]).total_seconds() for a_, b in zip(steady, steady[1:])}
    assert gaps == {60.0}, gaps
    steady_runs = [r for r in runs if r[0] == "steady"]
    assert sum(1 for r in steady_runs if r[1:3] == ("assimilate", "succeeded")) == len(steady)
    assert sum(1 for r in steady_runs if r[1:3] == ("forecast", "succeeded")) == len(steady)
    assert len({s[3] for s in steady}) == len(steady)  # distinct assimilation runs
    assert all(r[3] == "sched_app" for r in steady_runs)

    # The failing twin: each failed attempt is one 'failed' row with its attempt number, the
    # slot ends 'succeeded' at the attempt after the last failure.
    flaky = by_twin["flaky"]
    first = flaky[0]
    failed_runs = [r for r in runs if r[0] == "flaky" and r[2] == "failed"]
    assert granted_after is not None and len(failed_runs) >= 2
    assert first[1] == "succeeded" and first[2] == len(failed_runs) + 1, (first, failed_runs)
    for k, r in enumerate(failed_runs, start=1):
        assert r[1] == "assimilate" and "42501" in r[4], r
        # pg_enkf 0.3.0 and later record the attempt through enkf.record_failed_run; with
        # 0.2.0 the sidecar writes the row itself and numbers the attempt.
        if "attempt" in r[4]:
            assert f"attempt {k} of 6 failed" in r[4], r
        # Readable without row-level security: the SQLSTATE (and its name), never the message
        # (which names the table here, and could quote a location or a value).
        assert "flaky_obs" not in r[4], r
    assert first[5] and "42501 insufficient_privilege" in first[5] and "flaky_obs" not in first[5], first
    # The full message is in the sidecar's own log.
    assert any("flaky_obs" in str(line.get("error", "")) for s in sidecars + [once] for line in s.log_lines())
    assert all(s[1] == "succeeded" and s[2] == 1 for s in flaky[1:])
    assert sum(1 for r in runs if r[0] == "flaky" and r[1:3] == ("assimilate", "succeeded")) == len(flaky)

    # Missed slots after "downtime": one catch-up run, then one per minute; never a burst.
    late = by_twin["late"]
    assert all(s[1] == "succeeded" for s in late)
    assert late[0][0] >= start.replace(second=0, microsecond=0) - datetime.timedelta(minutes=1)
    assert len(late) <= len(steady) + 2
    assert sum(1 for r in runs if r[0] == "late" and r[1:3] == ("assimilate", "succeeded")) == len(late)
    assert "manual" not in by_twin

    # Every attempt is counted once across the three sidecars' /metrics.
    ok = sum(metric(m, 'enkf_sidecar_runs_total{status="succeeded"}') for m in metrics)
    bad = sum(metric(m, 'enkf_sidecar_runs_total{status="failed"}') for m in metrics)
    once_ok = summary["succeeded"]
    assert ok + once_ok == len(slots), (ok, once_ok, len(slots))
    assert bad + summary["failed"] == len(failed_runs)
    assert all(metric(m, "enkf_sidecar_run_duration_seconds_count") >= 0 for m in metrics)
    winners = {s[4].rsplit(":", 1)[1] for s in steady + flaky + late}

    # The password never appears in a log (log_statement = 'all' on the server).
    pw = sched_db["password"]
    assert pw not in pg.log_text()
    for s in sidecars + [once]:
        assert pw not in s.log.read_text()
    print(
        f"\nscheduler: {elapsed:.0f} s, slots steady={len(steady)} flaky={len(flaky)} late={len(late)}, "
        f"failed attempts={len(failed_runs)}, sidecar processes that ran slots={len(winners)}"
    )


def test_sigterm_rolls_back_a_running_job(pg, pki, sidecar_bin, workdir, sched_db):
    db = sched_db["db"]
    with psycopg.connect(pg.dsn(db), autocommit=True) as a:
        # Large enough that the assimilation takes seconds.
        make_data(a, locations=30, weeks=156, seed=5, table="slow_obs", loc_table="slow_locs")
        a.execute("GRANT SELECT ON slow_obs, slow_locs TO sched_group")
        # Every twin but this one is left unscheduled, so that the pass goes straight to it.
        a.execute("UPDATE enkf.twins SET config = config || '{\"schedule\": null}'")
        a.execute(
            "SELECT enkf.create_twin('slow', 'slow_obs', 'slow_locs', members => 800, config => %s)",
            (EVERY_MINUTE,),
        )
        a.execute("UPDATE enkf.twins SET created_at = now() - interval '1 hour' WHERE name = 'slow'")
    creds = workdir / "credentials.json"
    creds.write_text(json.dumps({
        "host": "localhost", "port": pg.port, "username": "sched_app", "password": sched_db["password"], "dbname": db,
    }))
    sc = se.Sidecar(sidecar_bin, workdir, "slow", {
        "database": {"tls": "verify-full", "ca_file": str(pki.path("ca1.crt"))},
        "secrets": {"source": "file", "file": str(creds)},
        "scheduler": {"shutdown_grace": "0s"},
        "http": {"listen": ""},
    })
    p = sc.start("schedule", "--once")
    deadline = time.time() + 60
    while time.time() < deadline and not any(
        line.get("message") == "running scheduled slot" for line in sc.log_lines()
    ):
        time.sleep(0.1)
    time.sleep(0.5)
    assert p.poll() is None, "the run finished before SIGTERM: make the twin larger"
    t0 = time.time()
    codes = sc.stop_all()
    stopped_in = time.time() - t0
    assert codes == [0]
    messages = [line.get("message") for line in sc.log_lines()]
    assert "scheduled run interrupted by shutdown and rolled back" in messages, messages
    with psycopg.connect(pg.dsn(db), autocommit=True) as a:
        leftovers = a.execute(
            """SELECT (SELECT count(*) FROM enkf.runs r JOIN enkf.twins t USING (twin_id) WHERE t.name = 'slow'),
                      (SELECT count(*) FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id) WHERE t.name = 'slow'),
                      (SELECT count(*) FROM enkf.schedule_slots s JOIN enkf.twins t USING (twin_id) WHERE t.name = 'slow')"""
        ).fetchone()
    # Nothing half-written, and the slot is not marked: the next pass runs it again.
    assert leftovers == (0, 0, 0), leftovers
    print(f"\nSIGTERM during a run: stopped and rolled back in {stopped_in:.1f} s")


def test_scheduling_continues_while_secrets_manager_is_down(pg, pki, sidecar_bin, workdir, sched_db):
    """A scheduler-only sidecar reading its credentials from Secrets Manager: once the endpoint
    stops, passes use the last AWSCURRENT read and due slots still run."""
    db = sched_db["db"]
    with psycopg.connect(pg.dsn(db), autocommit=True) as a:
        a.execute("UPDATE enkf.twins SET config = config || '{\"schedule\": null}'")
        a.execute(
            "SELECT enkf.create_twin('offline', 'obs', 'locs', members => 20, config => %s)", (EVERY_MINUTE,)
        )
        a.execute("UPDATE enkf.twins SET created_at = now() - interval '1 hour' WHERE name = 'offline'")
    moto = se.Moto()  # its own endpoint: stopping it must not disturb other tests
    try:
        sm = moto.client()
        sm.create_secret(Name="offline/app", SecretString=json.dumps({
            "engine": "postgres", "host": "localhost", "port": pg.port, "username": "sched_app",
            "password": sched_db["password"], "dbname": db,
        }))
        port = free_port()
        sc = se.Sidecar(sidecar_bin, workdir, "offline", {
            "database": {"tls": "verify-full", "ca_file": str(pki.path("ca1.crt"))},
            "secrets": {"source": "aws", "secret_id": "offline/app", "region": se.REGION, "endpoint_url": moto.url},
            "rotation": {"enabled": False},
            "scheduler": {"poll_interval": "2s"},
            "http": {"listen": f"127.0.0.1:{port}"},
        })
        sc.start("run")

        def succeeded():
            with psycopg.connect(pg.dsn(db), autocommit=True) as a:
                return [r[0] for r in a.execute(
                    """SELECT s.slot FROM enkf.schedule_slots s JOIN enkf.twins t USING (twin_id)
                        WHERE t.name = 'offline' AND s.status = 'succeeded' ORDER BY 1"""
                ).fetchall()]

        deadline = time.time() + 90
        while time.time() < deadline and not succeeded():
            time.sleep(1)
        before = succeeded()
        assert before, "the catch-up slot did not run with Secrets Manager up"
    finally:
        moto.stop()
    try:
        deadline = time.time() + 150
        while time.time() < deadline and len(succeeded()) <= len(before):
            time.sleep(1)
        after = succeeded()
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
    finally:
        codes = sc.stop_all()
    assert codes == [0]
    assert len(after) > len(before) and after[-1] > before[-1], (before, after)
    messages = [line.get("message", "") for line in sc.log_lines()]
    assert any(m.startswith("cannot read AWSCURRENT from Secrets Manager: using the last AWSCURRENT read") for m in messages)
    assert health == 200
    print(f"\nwith Secrets Manager stopped: slots {[str(x) for x in after[len(before):]]} ran")
