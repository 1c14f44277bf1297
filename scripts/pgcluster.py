"""A throwaway PostgreSQL 15 cluster: its own data directory, port and socket directory.

Used by the SQL-level tests, the end-to-end tests and the demo. When run as root, the server
runs as the `postgres` system user (initdb refuses root). The cluster is stopped and, unless
`keep=True`, removed on `stop()`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# The PostgreSQL installation, as scripts/pg.env sets it (the same defaults).
PG_MAJOR = os.environ.get("PG_MAJOR", "15")
PG_BIN = Path(os.environ.get("PG_BIN", f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
PG_CONFIG = PG_BIN / "pg_config"


def pg_config(option: str) -> str:
    """One value of pg_config (e.g. "--pkglibdir") for the installation at PG_BIN."""
    return subprocess.run([str(PG_CONFIG), option], check=True, capture_output=True, text=True).stdout.strip()
# Where TimescaleDB comes from on the development and CI machines (relative to the repository).
TIMESCALEDB_INSTALLER = "../shared/tools/install-timescaledb.sh"


def timescaledb_version(pg_bin: str | Path | None = None) -> str | None:
    """The version of TimescaleDB installed into the PostgreSQL of `pg_bin` (PG_BIN by default),
    from its control file, or None when it is not installed."""
    pg_bin = Path(pg_bin) if pg_bin else PG_BIN
    try:
        share = subprocess.run([str(pg_bin / "pg_config"), "--sharedir"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    control = Path(share) / "extension" / "timescaledb.control"
    if not control.exists():
        return None
    for line in control.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "default_version":
            return value.strip().strip("'")
    return None


def preload(conf: dict[str, str] | None, library: str) -> dict[str, str]:
    """A copy of `conf` (Cluster settings) with `library` added to shared_preload_libraries
    (TimescaleDB first, as in docs/hipaa.md), and for TimescaleDB with telemetry off: test and
    demo clusters never call home."""
    out = dict(conf or {})
    libs = [l.strip() for l in out.get("shared_preload_libraries", "''").strip("'").split(",") if l.strip()]
    if library not in libs:
        libs = [library, *libs] if library == "timescaledb" else [*libs, library]
    out["shared_preload_libraries"] = "'" + ",".join(libs) + "'"
    if library == "timescaledb":
        out.setdefault("timescaledb.telemetry_level", "off")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env() -> dict[str, str]:
    """The server's environment, as a service manager would give it: without RUST_BACKTRACE,
    which would make Rust code attach backtraces to error details."""
    return {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}


def _as_server_user() -> list[str]:
    """Prefix that runs a command as the server's OS user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return []


class Cluster:
    def __init__(
        self,
        datadir: str | Path | None = None,
        port: int | None = None,
        conf: dict[str, str] | None = None,
        keep: bool = False,
        initdb_args: list[str] | None = None,
        pg_bin: str | Path | None = None,
        hba: list[str] | None = None,
    ):
        self.port = port or free_port()
        self.keep = keep
        self.conf = conf or {}
        self.initdb_args = initdb_args or []
        # Lines of pg_hba.conf replacing initdb's (None keeps initdb's trust rules).
        self.hba = hba
        # Another PostgreSQL installation's bin directory (e.g. a private copy with other
        # extension files, for upgrade tests); PG_BIN by default.
        self.pg_bin = Path(pg_bin) if pg_bin else PG_BIN
        if datadir is None:
            self.base = Path(tempfile.mkdtemp(prefix="pg_enkf_cluster_"))
            self.datadir = self.base / "data"
        else:
            self.datadir = Path(datadir)
            self.base = self.datadir.parent
        self.sockdir = self.base / "sock"
        self.logfile = self.base / "server.log"

    # --- lifecycle -------------------------------------------------------------------------
    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> "Cluster":
        self.base.mkdir(parents=True, exist_ok=True)
        self._chown(self.base)
        # The server user must be able to reach the base directory.
        os.chmod(self.base, 0o755)
        self.sockdir.mkdir(exist_ok=True)
        self._chown(self.sockdir)
        if not (self.datadir / "PG_VERSION").exists():
            subprocess.run(
                _as_server_user()
                + [
                    str(self.pg_bin / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    *self.initdb_args,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockdir}'",
            "fsync": "off",
            "max_connections": "50",
        }
        settings.update(self.conf)
        with open(self.datadir / "postgresql.auto.conf", "a") as f:
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        if self.hba is not None:
            (self.datadir / "pg_hba.conf").write_text("\n".join(self.hba) + "\n")
        return self

    def install_file(self, src: str | Path, name: str, mode: int = 0o600) -> Path:
        """Copies a file (e.g. a TLS key) into the data directory, owned by the server user.
        Call after init(); a reload() makes PostgreSQL pick up changed TLS files."""
        dst = self.datadir / name
        shutil.copyfile(src, dst)
        os.chmod(dst, mode)
        self._chown(dst)
        return dst

    def start(self) -> "Cluster":
        if not (self.datadir / "PG_VERSION").exists():
            self.init()
        if not self.logfile.exists():
            self.logfile.touch()
            self._chown(self.logfile)
        subprocess.run(
            _as_server_user()
            + [str(self.pg_bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start"],
            check=True,
            stdout=subprocess.DEVNULL,
            env=_server_env(),
        )
        return self

    def restart(self) -> "Cluster":
        subprocess.run(
            _as_server_user()
            + [str(self.pg_bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "restart"],
            check=True,
            stdout=subprocess.DEVNULL,
            env=_server_env(),
        )
        return self

    def reload(self) -> None:
        subprocess.run(
            _as_server_user() + [str(self.pg_bin / "pg_ctl"), "-D", str(self.datadir), "reload"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user() + [str(self.pg_bin / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- connecting ------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = "postgres", **extra: str) -> str:
        parts = {"host": "127.0.0.1", "port": str(self.port), "dbname": dbname, "user": user}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def psql_command(self, dbname: str = "postgres") -> str:
        return f"psql -h 127.0.0.1 -p {self.port} -U postgres {dbname}"

    def psql(self, sql: str, dbname: str = "postgres", check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.pg_bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", dbname, "-c", sql],
            check=check,
            capture_output=True,
            text=True,
        )

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""
