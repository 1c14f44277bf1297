"""pgaudit sees pg_enkf's computation under the caller: a cluster of its own with pgaudit
preloaded and TLS, an operator-level login role over verify-full TLS runs enkf.assimilate, and
the server log must hold the function call, the nested read of the observation table and the
writes to the twin's tables, each under that role. Synthetic data only."""

from __future__ import annotations

import re

import psycopg
import pytest

from pgcluster import Cluster
from pki import Pki, use_cert
from twin.test_twin import make_data

PASSWORD = "Audit-test-7f3c9"

HBA = [
    "local all postgres trust",
    "hostssl all all 127.0.0.1/32 scram-sha-256",
]


@pytest.fixture()
def audited(tmp_path):
    pki = Pki(tmp_path)
    c = Cluster(
        conf={
            "shared_preload_libraries": "'pgaudit'",
            "pgaudit.log": "'read, write, function, role, ddl'",
            "pgaudit.log_relation": "on",
            "pgaudit.log_parameter": "off",
            "ssl": "on",
            "ssl_cert_file": "'server.crt'",
            "ssl_key_file": "'server.key'",
            "ssl_min_protocol_version": "'TLSv1.2'",
            "password_encryption": "'scram-sha-256'",
            "log_line_prefix": "'%m [%p] user=%u db=%d '",
        },
        hba=HBA,
    ).init()
    use_cert(c, pki, "good", reload=False)
    c.start()
    yield c, pki
    c.stop()


def test_assimilate_is_audited_under_the_calling_role(audited):
    c, pki = audited
    admin_dsn = f"host={c.sockdir} port={c.port} dbname=postgres user=postgres"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION pgaudit")
        admin.execute("CREATE EXTENSION pg_enkf")
        make_data(admin, locations=2, weeks=40)
        admin.execute("SELECT enkf.create_twin('audited', 'obs', 'locs', members => 10)")
        admin.execute("SELECT * FROM enkf.create_roles()")
        admin.execute(f"CREATE ROLE ana LOGIN PASSWORD '{PASSWORD}' IN ROLE enkf_operator")
        admin.execute("GRANT SELECT ON obs, locs TO ana")
        admin.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('ana', '*')")
    mark = len(c.log_text())
    user_dsn = (
        f"host=localhost hostaddr=127.0.0.1 port={c.port} dbname=postgres user=ana password={PASSWORD} "
        f"sslmode=verify-full sslrootcert={pki.path('ca1.crt')}"
    )
    with psycopg.connect(user_dsn, autocommit=True) as ana:
        assert ana.info.pgconn.ssl_in_use
        pid = ana.info.backend_pid
        run = ana.execute("SELECT * FROM enkf.assimilate('audited')").fetchone()
        assert run[1] == 2
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        assert admin.execute("SELECT run_by, session_user_name FROM enkf.runs").fetchall() == [("ana", "ana")]
        # Nothing in pg_enkf escalates: no SECURITY DEFINER function at all.
        assert admin.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'enkf'::regnamespace AND prosecdef"
        ).fetchone()[0] == 0

    log = c.log_text()[mark:]
    audit = [line for line in log.splitlines() if f"[{pid}]" in line and "AUDIT: SESSION," in line]
    entries = set()
    for line in audit:
        # Every audit line of the session carries the calling role.
        assert " user=ana " in line, line
        fields = line.split("AUDIT: SESSION,", 1)[1].split(",")
        entries.add((fields[2], fields[3], fields[4], fields[5]))  # class, command, type, object
    assert ("FUNCTION", "EXECUTE", "FUNCTION", "enkf.assimilate") in entries, entries
    assert ("READ", "SELECT", "TABLE", "public.obs") in entries, entries
    assert ("WRITE", "INSERT", "TABLE", "enkf.checkpoints") in entries, entries
    assert ("WRITE", "INSERT", "TABLE", "enkf.runs") in entries, entries
    # The nested statements are sub-statements of the caller's one statement.
    statement_ids = {re.split(",", line.split("AUDIT: SESSION,", 1)[1])[0] for line in audit}
    assert len(statement_ids) == 1
    assert PASSWORD not in log
