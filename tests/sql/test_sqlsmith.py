"""SQLsmith's random queries over pg_enkf's tables, views and functions, as an analyst and as an
operator, each in a cluster of its own: the server never crashes, and no query that touches
pg_enkf ends in an internal error (XX000: a Rust panic, or an unexpected state in pg_enkf's SQL).
The long runs (100,000 queries per role) are bench/sqlsmith.py."""

from __future__ import annotations

import shutil

import pytest
from sql.sqlsmith_harness import run

QUERIES = 3000


@pytest.mark.skipif(shutil.which("sqlsmith") is None, reason="sqlsmith is installed by scripts/setup.sh")
@pytest.mark.parametrize("kind", ["analyst", "operator"])
def test_sqlsmith_over_pg_enkf(kind):
    out = run(QUERIES if kind == "analyst" else QUERIES // 2, kind)
    assert not out.crashed, out.output_tail
    assert out.returncode == 0, out.output_tail
    assert not out.internal, out.internal[:5]
    # SQLsmith did reach pg_enkf's objects.
    assert out.reached_enkf, "no statement touching enkf.* was logged"
