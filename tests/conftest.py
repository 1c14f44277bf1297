"""Shared fixtures: one throwaway PostgreSQL 15 cluster per test session, with pg_enkf
installed (the test command installs the extension into PostgreSQL's directories first).

Storage: every test that works on tables runs twice when TimescaleDB is installed, once on
plain tables and once on TimescaleDB (the `storage` fixture, a parameter of `dbname` and of
the fixtures that start clusters of their own): there, TimescaleDB is created before pg_enkf
(so enkf.checkpoints and enkf.forecasts are hypertables) and the observation tables made by
support.data.make_data are hypertables. Tests marked `plain_only` do not depend on where
tables live and run once; tests marked `timescaledb` run only when it is installed.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
# Shared helpers: tests/support (support.data.make_data, ...).
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import Cluster  # noqa: E402
from support.storage import NOT_INSTALLED, STORAGES, TIMESCALEDB, Storage  # noqa: E402

def pytest_configure(config):
    config.addinivalue_line("markers", "plain_only: does not depend on where tables live; runs on plain tables only")
    config.addinivalue_line("markers", "timescaledb: needs TimescaleDB; skipped when it is not installed")


def pytest_report_header(config):
    if TIMESCALEDB:
        return f"TimescaleDB {TIMESCALEDB}: tests of tables run on plain tables and on TimescaleDB"
    return NOT_INSTALLED


def pytest_collection_modifyitems(config, items):
    keep, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        storage = params.params.get("storage") if params else None
        if storage == "timescaledb" and item.get_closest_marker("plain_only"):
            dropped.append(item)
        else:
            keep.append(item)
            if item.get_closest_marker("timescaledb") and not TIMESCALEDB:
                item.add_marker(pytest.mark.skip(reason=NOT_INSTALLED))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_terminal_summary(terminalreporter):
    if not TIMESCALEDB:
        terminalreporter.write_line(NOT_INSTALLED, yellow=True)


@pytest.fixture(scope="session", params=STORAGES)
def storage(request) -> Storage:
    return Storage(request.param)


@pytest.fixture(scope="session")
def cluster():
    # TimescaleDB preloaded when installed: databases of plain storage simply do not create it.
    c = Cluster(conf=Storage("timescaledb").conf() if TIMESCALEDB else None).start()
    yield c
    c.stop()


@pytest.fixture()
def dbname(cluster, storage):
    """A fresh database with pg_enkf (and TimescaleDB first, on that storage), dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(cluster.dsn(name), autocommit=True) as c:
        storage.create_extensions(c)
    yield name
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def conn(cluster, dbname):
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as c:
        yield c
