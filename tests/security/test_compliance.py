"""enkf.compliance_report(): each control goes from fail to pass when the configuration is
changed, on a cluster of its own; a non-superuser gets a report too, with 'unknown' where
PostgreSQL hides the setting from them."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from pgcluster import Cluster, _as_server_user
from support.pki import Pki, use_cert

PASSWORD = "Compliance-test-31d"
CONTROLS = [
    "tls", "password_encryption", "pg_hba_auth_methods", "pgaudit_loaded", "pgaudit_classes",
    "pgaudit_log_parameter", "connection_logging", "idle_session_timeout", "location_grants",
    "row_level_security",
    "data_checksums", "wal_archiving",
]


def report(c: Cluster, user: str = "postgres") -> dict[str, str]:
    dsn = f"host={c.sockdir} port={c.port} dbname=postgres user={user} password={PASSWORD}"
    with psycopg.connect(dsn, autocommit=True) as k:
        rows = k.execute("SELECT control, status, detail, remedy FROM enkf.compliance_report()").fetchall()
    assert [r[0] for r in rows] == CONTROLS
    assert all(r[3] for r in rows)  # every control has a remedy
    return {r[0]: r[1] for r in rows}


@pytest.fixture()
def cluster_(tmp_path, storage):
    c = Cluster(
        conf=storage.conf({"password_encryption": "'md5'", "ssl": "off", "log_connections": "off"}),
        hba=["local all all trust", "host all all 127.0.0.1/32 md5"],
    ).init()
    c.start()
    yield c, tmp_path, storage
    c.stop()


def alter_system(c: Cluster, settings: dict[str, str], restart: bool = True) -> None:
    dsn = f"host={c.sockdir} port={c.port} dbname=postgres user=postgres password={PASSWORD}"
    with psycopg.connect(dsn, autocommit=True) as k:
        for name, value in settings.items():
            k.execute(f"ALTER SYSTEM SET {name} = {value}")
    if restart:
        c.restart()


def test_each_control_turns_from_fail_to_pass(cluster_):
    c, tmp, storage = cluster_
    dsn = f"host={c.sockdir} port={c.port} dbname=postgres user=postgres"
    with psycopg.connect(dsn, autocommit=True) as k:
        storage.create_extensions(k)
        k.execute("SELECT * FROM enkf.create_roles()")
        k.execute(f"CREATE ROLE ana LOGIN PASSWORD '{PASSWORD}' IN ROLE enkf_analyst")
        k.execute("ALTER TABLE enkf.checkpoints DISABLE ROW LEVEL SECURITY")
        # A grant left behind by a role that was dropped.
        k.execute("CREATE ROLE gone")
        k.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('gone', '06')")
        k.execute("DROP ROLE gone")
        # The caller's own session setting is not the server's: it does not make the control pass.
        k.execute("SET idle_session_timeout = '1min'")
        own = dict(k.execute("SELECT control, status FROM enkf.compliance_report()").fetchall())
        assert own["idle_session_timeout"] == "fail", own

    # 1. A careless configuration: everything fails; pgaudit's own settings do not exist yet.
    first = report(c)
    assert first.pop("pgaudit_classes") == "unknown" and first.pop("pgaudit_log_parameter") == "unknown"
    assert set(first.values()) == {"fail"}, first

    # 2. pgaudit loaded, but with too few classes and parameters logged.
    # (A list, not one quoted string, for ALTER SYSTEM.)
    alter_system(c, {"shared_preload_libraries": "timescaledb, pgaudit" if storage.timescaledb else "'pgaudit'"})
    alter_system(c, {"pgaudit.log": "'read, ddl'", "pgaudit.log_parameter": "on"}, restart=False)
    c.reload()
    second = report(c)
    assert second["pgaudit_loaded"] == "pass"
    assert second["pgaudit_classes"] == "fail" and second["pgaudit_log_parameter"] == "fail"

    # 3. The configuration of docs/hipaa.md.
    pki = Pki(tmp)
    use_cert(c, pki, "good", reload=False)
    archive = tmp / "wal-archive"
    archive.mkdir()
    subprocess.run(["chown", "postgres", str(archive)], check=True)
    with psycopg.connect(dsn, autocommit=True) as k:
        k.execute("SET password_encryption = 'scram-sha-256'")
        k.execute(f"ALTER ROLE postgres PASSWORD '{PASSWORD}'")
        k.execute(f"ALTER ROLE ana PASSWORD '{PASSWORD}'")
        k.execute("ALTER ROLE ana SET idle_session_timeout = '15min'")
        k.execute("ALTER TABLE enkf.checkpoints ENABLE ROW LEVEL SECURITY")
        k.execute("DELETE FROM enkf.location_grants g WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = g.role::oid)")
    alter_system(c, {
        "ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'",
        "ssl_min_protocol_version": "'TLSv1.2'", "password_encryption": "'scram-sha-256'",
        "pgaudit.log": "'read, write, function, role, ddl'", "pgaudit.log_parameter": "off",
        "log_connections": "on", "log_disconnections": "on",
        "archive_mode": "on", "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'",
    }, restart=False)
    (c.datadir / "pg_hba.conf").write_text(
        "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
    )
    # Checksums can only be enabled on a stopped cluster.
    subprocess.run(
        _as_server_user() + [str(c.pg_bin / "pg_ctl"), "-D", str(c.datadir), "-m", "fast", "-w", "stop"],
        check=True, stdout=subprocess.DEVNULL,
    )
    subprocess.run(_as_server_user() + [str(c.pg_bin / "pg_checksums"), "--enable", "-D", str(c.datadir)],
                   check=True, stdout=subprocess.DEVNULL)
    c.start()
    third = report(c)
    assert set(third.values()) == {"pass"}, third

    # A non-superuser gets the report; what is hidden from them is unknown, nothing fails.
    as_analyst = report(c, "ana")
    assert set(as_analyst.values()) <= {"pass", "unknown"}, str([k for k, v in as_analyst.items() if v == "fail"])
    assert as_analyst["pg_hba_auth_methods"] == "unknown"
    assert as_analyst["idle_session_timeout"] == "pass" and as_analyst["row_level_security"] == "pass"

    # 4. A network line without TLS fails, even with scram-sha-256; one for loopback only passes.
    for line, status in [("host all all 10.0.0.0/8 scram-sha-256", "fail"),
                         ("hostnossl all all 0.0.0.0/0 scram-sha-256", "fail"),
                         ("hostssl all all 0.0.0.0/0 password", "fail"),
                         ("host all all 127.0.0.1/32 scram-sha-256", "pass")]:
        (c.datadir / "pg_hba.conf").write_text(
            f"local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n{line}\n"
        )
        c.reload()
        assert report(c)["pg_hba_auth_methods"] == status, line
