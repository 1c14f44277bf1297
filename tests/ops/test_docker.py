"""The container image (docker/postgres.Dockerfile, not built here: no Docker engine) pins the
TimescaleDB the tests run on, and configures pgaudit as docs/hipaa.md asks."""

from __future__ import annotations

import re

import pytest
from pgops import ROOT
from support.storage import TIMESCALEDB

DOCKERFILE = ROOT / "docker" / "postgres.Dockerfile"


@pytest.mark.timescaledb
def test_image_pins_the_timescaledb_of_the_tests():
    pinned = re.search(r"^ARG TIMESCALEDB_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert pinned == TIMESCALEDB, f"docker/postgres.Dockerfile pins TimescaleDB {pinned}, the tests run on {TIMESCALEDB}"


def test_image_configures_pgaudit_as_the_hipaa_guide():
    text = DOCKERFILE.read_text()
    hipaa = (ROOT / "docs" / "hipaa.md").read_text()
    for setting in ("pgaudit.log_parameter = off", "pgaudit.log_relation = on"):
        assert setting in hipaa
        assert f'"{setting.replace(" = ", "=")}"' in text, setting
    assert '"pgaudit.log=read,write,function,role,ddl"' in text
