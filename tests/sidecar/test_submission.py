"""The weekly job's file for the hub: after a scheduled run succeeds, the sidecar writes the
newest reference date's enkf.hub_submission as `<reference_date>-<team>-<model>.csv`, whole,
logs its SHA-256, rows and coverage, counts it in its metrics; the file passes the hub's task
definitions (scripts/hubfile.py). A file the database refuses is a warning, not a failed run."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import psycopg

import hubfile
import sidecar_env as se

ROOT = Path(__file__).resolve().parents[2]
EVERY_MINUTE = '{"schedule": {"cron": "* * * * *", "timezone": "America/New_York"}}'
# Synthetic locations under hub location codes (as tests/twin/test_targets.py), so that the
# file can be checked against the hub's task definitions.
RECODE = "CASE location WHEN 'L00001' THEN '06' WHEN 'L00002' THEN '36' ELSE '48' END"


def test_a_successful_run_writes_the_weeks_checked_submission(pg, pki, sidecar_bin, workdir):
    db, password = "subm", se.new_password()
    with psycopg.connect(pg.dsn(), autocommit=True) as a:
        a.execute(f"CREATE DATABASE {db}")
    with psycopg.connect(pg.dsn(db), autocommit=True) as a:
        a.execute("CREATE EXTENSION pg_enkf")
        a.execute("SELECT * FROM enkf.create_roles()")
        a.execute(f"CREATE ROLE subm_app LOGIN PASSWORD '{se.scram_verifier(password)}' IN ROLE enkf_operator")
        a.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('subm_app', '*')")
        a.execute(f"""CREATE TABLE obs AS SELECT time, {RECODE} AS location, value
                        FROM enkf.synthetic_surveillance(3, 20, '2025-08-02', 3)""")
        a.execute(f"""CREATE TABLE locs AS SELECT DISTINCT {RECODE} AS location, population
                        FROM enkf.synthetic_surveillance(3, 1, '2025-08-02', 3)""")
        a.execute("GRANT SELECT ON obs, locs TO subm_app")
        a.execute("SELECT enkf.create_twin('hub', 'obs', 'locs', members => 40, config => %s,"
                  " classification => 'public_aggregate')", (EVERY_MINUTE,))
        # 50 samples a location: the hub takes 100, so the database refuses this twin's file.
        odd = json.loads(EVERY_MINUTE) | {"targets": {"samples": 50}}
        a.execute("SELECT enkf.create_twin('odd', 'obs', 'locs', members => 40, config => %s,"
                  " classification => 'public_aggregate')", (json.dumps(odd),))
        # Due at once: created ten minutes ago.
        a.execute("UPDATE enkf.twins SET created_at = now() - interval '10 minutes'")
    creds = workdir / "credentials.json"
    creds.write_text(json.dumps({"engine": "postgres", "host": "localhost", "port": pg.port,
                                 "username": "subm_app", "password": password, "dbname": db}))
    creds.chmod(0o600)
    out = workdir / "submissions"
    out.mkdir()
    sidecar = se.Sidecar(sidecar_bin, workdir, "subm", {
        "database": {"tls": "verify-full", "ca_file": str(pki.path("ca1.crt"))},
        "secrets": {"source": "file", "file": str(creds)},
        "http": {"listen": ""},
        "scheduler": {"poll_interval": "2s", "submission_directory": str(out), "submission_team": "pgenkf"},
    })
    r = sidecar.run("schedule", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["succeeded"] == 2, summary

    # The week's file, whole (no partial file left), valid for the hub.
    files = sorted(p.name for p in out.iterdir())
    assert files == ["2025-12-20-pgenkf-combined.csv"], files
    path = out / files[0]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert hubfile.problems(rows, hubfile.model_tasks(ROOT / "data" / "flusight" / "hub-tasks.json")) == []
    assert {r["location"] for r in rows} == {"06", "36", "48"}
    # The same rows as the database gives.
    with psycopg.connect(pg.dsn(db), autocommit=True) as a:
        assert a.execute("SELECT count(*) FROM enkf.hub_submission('hub', '2025-12-20')").fetchone()[0] == len(rows)
    # Its checksum, rows and coverage in the log; the refused file a warning.
    lines = sidecar.log_lines()
    written = [line for line in lines if line.get("message") == "hub submission written"]
    assert len(written) == 1, lines[-10:]
    w = written[0]
    assert w["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert w["rows"] == len(rows) and w["locations"] == 3 and w["coverage"] == 1.0 and w["twin"] == "hub"
    refused = [line for line in lines if line.get("message") == "hub submission not written"]
    assert len(refused) == 1 and refused[0]["twin"] == "odd" and "22023" in refused[0]["error"], refused
