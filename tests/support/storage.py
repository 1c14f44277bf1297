"""Where a test's tables live (conftest.py): plain PostgreSQL tables, or TimescaleDB."""

from __future__ import annotations

from pgcluster import TIMESCALEDB_INSTALLER, preload, timescaledb_version

TIMESCALEDB = timescaledb_version()
STORAGES = ["plain", "timescaledb"] if TIMESCALEDB else ["plain"]
NOT_INSTALLED = (
    f"TimescaleDB is not installed in this PostgreSQL: its runs are skipped (install it as root with "
    f"{TIMESCALEDB_INSTALLER}, or the timescaledb-2-postgresql-15 package, then run the tests again)"
)


class Storage:
    """Where a test's tables live: 'plain' or 'timescaledb'."""

    def __init__(self, name: str):
        self.name = name

    @property
    def timescaledb(self) -> bool:
        return self.name == "timescaledb"

    def conf(self, conf: dict[str, str] | None = None) -> dict[str, str]:
        """Settings of a cluster for this storage: `conf`, with TimescaleDB preloaded if used."""
        return preload(conf, "timescaledb") if self.timescaledb else dict(conf or {})

    def create_extensions(self, conn) -> None:
        """TimescaleDB (if used), then pg_enkf."""
        if self.timescaledb:
            conn.execute("CREATE EXTENSION timescaledb")
        conn.execute("CREATE EXTENSION pg_enkf")

    def __repr__(self) -> str:
        return self.name
