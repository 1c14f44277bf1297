"""Debian packages: scripts/package.sh builds postgresql-15-pg-enkf and enkf-sidecar; both are
installed on this machine with dpkg -i (over the same version that the test command installed
with cargo pgrx install, so the files are identical), and a new cluster that never saw the
source tree runs CREATE EXTENSION pg_enkf. The packages stay installed: removing them would
delete the extension files that the other tests use."""

from __future__ import annotations

import os
import shutil
import subprocess

import psycopg
import pytest
from pgcluster import Cluster
from pgops import ROOT, current_version, releases

SUDO = [] if os.geteuid() == 0 else ["sudo", "-n"]


def sh(*cmd: str, root: bool = False) -> str:
    r = subprocess.run([*(SUDO if root else []), *cmd], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def debs():
    if SUDO and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("installing Debian packages needs root or password-less sudo")
    sh(str(ROOT / "scripts" / "package.sh"))
    v, arch = current_version(), sh("dpkg", "--print-architecture").strip()
    paths = {n: ROOT / "target" / "debian" / f"{n}_{v}_{arch}.deb" for n in ("postgresql-15-pg-enkf", "enkf-sidecar")}
    for p in paths.values():
        assert p.exists(), p
    sh("dpkg", "-i", *map(str, paths.values()), root=True)
    return paths


def field(pkg: str, name: str) -> str:
    return sh("dpkg-query", "-W", f"-f=${{{name}}}", pkg)


def test_extension_package(debs):
    v = current_version()
    assert field("postgresql-15-pg-enkf", "Version") == v
    assert field("postgresql-15-pg-enkf", "db:Status-Abbrev").startswith("ii")
    depends = [d.strip().split()[0] for d in field("postgresql-15-pg-enkf", "Depends").split(",")]
    assert depends[0] == "postgresql-15" and "libc6" in depends, depends
    files = set(sh("dpkg", "-L", "postgresql-15-pg-enkf").split())
    ext = "/usr/share/postgresql/15/extension"
    expected = {"/usr/lib/postgresql/15/lib/pg_enkf.so", f"{ext}/pg_enkf.control", f"{ext}/pg_enkf--{v}.sql"}
    expected |= {f"{ext}/{p.name}" for p in (ROOT / "sql").glob("pg_enkf--*--*.sql")}
    assert expected <= files, expected - files
    # Only this version's install script: an older one would run against this library.
    assert {f for f in files if f.startswith(f"{ext}/pg_enkf--") and f.count("--") == 1} == {f"{ext}/pg_enkf--{v}.sql"}
    # Installed files match the package (md5sums).
    assert sh("dpkg", "-V", "postgresql-15-pg-enkf") == ""

    with Cluster() as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_enkf")
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_enkf'").fetchone()[0] == v
            out = conn.execute("SELECT enkf.analyze('{{1,2,3},{4,5,6}}', '{2}', '{1}', '{1}')").fetchone()[0]
            assert len(out) == 2 and len(out[0]) == 3
            # Every released version can be updated to this one with the packaged scripts.
            for old in releases():
                if old != v:
                    path = conn.execute(
                        "SELECT path FROM pg_extension_update_paths('pg_enkf') WHERE source = %s AND target = %s", (old, v)
                    ).fetchone()
                    assert path and path[0], f"no update path {old} -> {v}"


def test_sidecar_package(debs):
    v = current_version()
    assert field("enkf-sidecar", "Version") == v
    files = set(sh("dpkg", "-L", "enkf-sidecar").split())
    unit, conf = "/lib/systemd/system/enkf-sidecar.service", "/etc/enkf-sidecar/enkf-sidecar.toml"
    assert {"/usr/bin/enkf-sidecar", unit, conf} <= files
    assert field("enkf-sidecar", "Conffiles").split()[0] == conf
    assert {"adduser", "libc6"} <= {d.strip().split()[0] for d in field("enkf-sidecar", "Depends").split(",")}
    assert sh("dpkg", "-V", "enkf-sidecar") == ""
    r = subprocess.run(["/usr/bin/enkf-sidecar", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "enkf-sidecar" in r.stdout, r.stdout + r.stderr
    assert v in subprocess.run(["/usr/bin/enkf-sidecar", "--version"], capture_output=True, text=True).stdout
    # The unit runs the daemon with the packaged configuration, unprivileged and sandboxed.
    text = open(unit).read()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, _, val = line.partition("=")
            settings.setdefault(k.strip(), []).append(val.strip())
    assert "/usr/bin/enkf-sidecar" in settings["ExecStart"][0] and " run" in settings["ExecStart"][0]
    assert settings.get("User", ["x"])[0] != "root" and (settings.get("DynamicUser") == ["yes"] or "User" in settings)
    for key, want in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}.items():
        assert settings.get(key) == [want], (key, settings.get(key))
    assert "CapabilityBoundingSet" in settings
    # The service's user (static, so that systemd uses it for DynamicUser) can read the
    # configuration; other users cannot.
    assert os.stat(conf).st_mode & 0o777 == 0o640
    r = subprocess.run(["runuser", "-u", "enkf-sidecar", "--", "head", "-c1", conf], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["runuser", "-u", "nobody", "--", "head", "-c1", conf], capture_output=True, text=True)
    assert r.returncode != 0
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True)
        # Only complaints about this unit count (the machine may lack systemd as PID 1).
        bad = [l for l in r.stderr.splitlines() if "enkf-sidecar.service" in l and "Unknown" in l]
        assert not bad, r.stderr
