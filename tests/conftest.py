"""Shared fixtures: one throwaway PostgreSQL 15 cluster per test session, with pg_enkf
installed (the test command installs the extension into PostgreSQL's directories first)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
# Test modules share helpers (e.g. twin.test_twin.make_data).
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster():
    c = Cluster().start()
    yield c
    c.stop()


@pytest.fixture()
def dbname(cluster):
    """A fresh database with pg_enkf, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(cluster.dsn(name), autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_enkf")
    yield name
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def conn(cluster, dbname):
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as c:
        yield c
