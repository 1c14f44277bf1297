"""Test certificates made with the openssl CLI, shared by the TLS tests (sidecar, pgaudit,
compliance, JDBC), and installing one into a cluster's data directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pgcluster import Cluster


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """Two CAs and three server certificates: `good` (CA 1, localhost), `wronghost` (CA 1,
    another host name) and `rogue` (CA 2, localhost)."""

    def __init__(self, d: Path):
        self.dir = d
        for ca in ("ca1", "ca2"):
            _openssl(
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=pg_enkf test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=d,
            )
        self.server("good", "ca1", "localhost", "DNS:localhost,IP:127.0.0.1")
        self.server("wronghost", "ca1", "db.example.invalid", "DNS:db.example.invalid")
        self.server("rogue", "ca2", "localhost", "DNS:localhost,IP:127.0.0.1")

    def server(self, name: str, ca: str, cn: str, san: str) -> None:
        """Another server certificate, signed by `ca`, for common name `cn` and SANs `san`."""
        ext = self.dir / f"{name}.ext"
        ext.write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=self.dir)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=self.dir)

    def path(self, name: str) -> Path:
        return self.dir / name


def use_cert(c: Cluster, pki: Pki, name: str, reload: bool = True) -> None:
    c.install_file(pki.path(f"{name}.crt"), "server.crt", 0o644)
    c.install_file(pki.path(f"{name}.key"), "server.key", 0o600)
    if reload:
        c.reload()
