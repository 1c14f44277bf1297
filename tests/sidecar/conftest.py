"""Fixtures of the sidecar's end-to-end tests: the enkf-sidecar binary (built if needed),
certificates made with the openssl CLI, a Secrets Manager endpoint (moto_server) on loopback,
and PostgreSQL 15 clusters with TLS, SCRAM authentication and log_statement = 'all'."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sidecar_env as se  # noqa: E402


@pytest.fixture(scope="session")
def sidecar_bin() -> Path:
    return se.build_sidecar()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> se.Pki:
    return se.Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def moto():
    m = se.Moto()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def pg(pki):
    """A cluster with the good server certificate, SCRAM for every user but postgres, and
    every statement logged."""
    c = se.tls_cluster(pki)
    yield c
    c.stop()


@pytest.fixture()
def workdir(tmp_path) -> Path:
    os.chmod(tmp_path, 0o755)
    return tmp_path
