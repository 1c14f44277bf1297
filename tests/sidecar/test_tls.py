"""TLS of enkf-sidecar's connections (verify-full through sslmode=require + native-tls with the
configured root): a certificate from another CA and one for another host name are refused
before any password is sent; plain TCP only when configured, with a loud warning."""

from __future__ import annotations

import json

import psycopg
import pytest

import sidecar_env as se


@pytest.fixture(scope="module")
def tls_app(pg):
    pw = se.new_password()
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f"CREATE ROLE tlsapp LOGIN PASSWORD '{se.scram_verifier(pw)}'")
    return pw


def sidecar(sidecar_bin, workdir, pki, pg, password, host="localhost", ca="ca1.crt"):
    creds = workdir / "credentials.json"
    creds.write_text(json.dumps({
        "engine": "postgres", "host": host, "port": pg.port, "username": "tlsapp",
        "password": password, "dbname": "postgres",
    }))
    config = {
        "database": {"tls": "verify-full", "ca_file": str(pki.path(ca))},
        "secrets": {"source": "file", "file": str(creds)},
        "scheduler": {"enabled": False},
        "http": {"listen": ""},
    }
    return se.Sidecar(sidecar_bin, workdir, "tls", config)


def authorized(pg) -> int:
    """Sessions of tlsapp that got as far as authentication (log_connections = on)."""
    return pg.log_text().count("connection authorized: user=tlsapp")


@pytest.mark.parametrize(
    "cert, reason",
    [("rogue", "certificate verify failed"), ("wronghost", "hostname mismatch")],
)
def test_refuses_untrusted_server_certificates(cert, reason, pg, pki, sidecar_bin, workdir, tls_app):
    sc = sidecar(sidecar_bin, workdir, pki, pg, tls_app)
    try:
        se.use_cert(pg, pki, cert)
        before = authorized(pg)
        r = sc.run("check")
        assert r.returncode == 1, r.stdout
        assert "FAILED database connection" in r.stdout
        assert reason in r.stdout.lower(), r.stdout
        # The handshake failed before authentication: no password exchange took place.
        assert authorized(pg) == before
    finally:
        se.use_cert(pg, pki, "good")
    r = sc.run("check")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "TLS on" in r.stdout


def test_verifies_ip_addresses_and_only_the_configured_root(pg, pki, sidecar_bin, workdir, tls_app):
    # The good certificate names 127.0.0.1 too (IP SAN): connecting by address passes.
    r = sidecar(sidecar_bin, workdir, pki, pg, tls_app, host="127.0.0.1").run("check")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    # Trusting the other CA only: the genuine server is refused.
    r = sidecar(sidecar_bin, workdir, pki, pg, tls_app, ca="ca2.crt").run("check")
    assert r.returncode == 1 and "certificate verify failed" in r.stdout.lower(), r.stdout


def test_plain_connections_only_when_configured_and_loudly(pg, pki, sidecar_bin, workdir, tls_app):
    sc = sidecar(sidecar_bin, workdir, pki, pg, tls_app)
    r = sc.run("check", env={"ENKF_SIDECAR_DATABASE_TLS": "disable"})
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "TLS OFF" in r.stdout
    warnings = [line for line in sc.log_lines() if line.get("level") == "WARN"]
    assert any("TLS IS DISABLED" in line.get("message", "") for line in warnings), warnings
    # Without the explicit setting there is no silent downgrade: verify-full needs a CA file.
    sc2 = se.Sidecar(sidecar_bin, workdir, "noca", {
        "secrets": {"source": "file", "file": str(workdir / "credentials.json")},
        "scheduler": {"enabled": False},
    })
    r = sc2.run("check")
    assert r.returncode == 2 and "ca_file is required" in r.stderr, r.stderr
    assert tls_app not in sc.log.read_text() and tls_app not in pg.log_text()
