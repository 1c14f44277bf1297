"""BI over JDBC: compiles tests/jdbc/BiClient.java with the machine's JDK and runs it with the
PostgreSQL JDBC driver (Debian package libpostgresql-jdbc-java) against a cluster that only
accepts TLS connections, with certificates this test makes (a CA, and a server certificate for
localhost). The Java program does the checks; see its header."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from pgcluster import Cluster
from support.data import make_data
from support.pki import Pki, use_cert


JDBC_JAR = Path("/usr/share/java/postgresql.jar")
PASSWORD = "bi-test-only"


@pytest.mark.skipif(not JDBC_JAR.exists() or shutil.which("javac") is None, reason="needs a JDK and libpostgresql-jdbc-java (scripts/setup.sh installs them)")
def test_bi_client_over_tls(tmp_path, storage):
    cluster = Cluster(
        conf=storage.conf({
            # localhost, not 127.0.0.1: the client must connect by the name in the certificate.
            "listen_addresses": "'localhost'",
            "ssl": "on",
            "ssl_cert_file": "'server.crt'",
            "ssl_key_file": "'server.key'",
            "password_encryption": "'scram-sha-256'",
        })
    )
    # ca1 signs a server certificate for the name localhost only (no IP address), so that a
    # connection to 127.0.0.1 must fail host-name verification; ca2 signed nothing of it.
    pki = Pki(tmp_path)
    pki.server("localonly", "ca1", "localhost", "DNS:localhost")
    cluster.init()
    use_cert(cluster, pki, "localonly", reload=False)
    # TCP only with TLS and a password; the Unix socket (setup below) stays trusted.
    (cluster.datadir / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostssl all all ::1/128 scram-sha-256\n"
    )
    with cluster:
        local = {"host": str(cluster.sockdir)}
        with psycopg.connect(cluster.dsn(**local), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bi")
            admin.execute(f"ALTER ROLE postgres PASSWORD '{PASSWORD}'")
        with psycopg.connect(cluster.dsn("bi", **local), autocommit=True) as conn:
            storage.create_extensions(conn)
            make_data(conn, locations=3, weeks=22, seed=3, first_week="2023-10-07")  # through the peak: counts above the suppression threshold
            conn.execute("SELECT enkf.create_twin('flu', 'obs', 'locs', members => 20)")
            conn.execute("SELECT * FROM enkf.assimilate('flu')")
            conn.execute("SELECT count(*) FROM enkf.forecast('flu')")
            reference, hub_rows = conn.execute(
                """SELECT max(reference_date)::text, count(*) FROM enkf.hubverse_forecasts
                     WHERE model_id = 'flu' AND output_type = 'quantile' AND horizon >= 0 GROUP BY model_id"""
            ).fetchone()
        assert hub_rows == 3 * 4 * 23

        classes = tmp_path / "classes"
        subprocess.run(["javac", "-d", str(classes), str(Path(__file__).with_name("BiClient.java"))], check=True)
        r = subprocess.run(
            ["java", "-cp", f"{classes}:{JDBC_JAR}", "BiClient", "localhost", str(cluster.port), "bi", "postgres", PASSWORD,
             str(pki.path("ca1.crt")), str(pki.path("ca2.crt")), "flu", reference, str(hub_rows), "3"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        print(r.stdout)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.rstrip().splitlines()[-1].startswith("OK: ")
