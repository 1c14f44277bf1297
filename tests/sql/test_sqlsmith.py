"""SQLsmith's random queries over pg_enkf's tables, views and functions, as an analyst role,
in a cluster of their own: the server never crashes, and no query that touches pg_enkf ends
in an internal error (XX000: a Rust panic, or an unexpected state in pg_enkf's SQL).

SQLsmith (Debian package sqlsmith) builds queries from the catalog; with --exclude-catalog it
draws its relations from the user schemas, here enkf's tables and views with a twin's data in
them, and calls any function it may, enkf.analyze and enkf.create_twin among them.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import psycopg
import pytest
from pgcluster import Cluster
from twin.test_twin import make_data

QUERIES = 3000


@pytest.mark.skipif(shutil.which("sqlsmith") is None, reason="sqlsmith is installed by scripts/setup.sh")
def test_sqlsmith_over_pg_enkf():
    conf = {
        # Every error with its SQLSTATE and statement, for the check below.
        "log_line_prefix": "'%e '",
        "log_min_error_statement": "error",
        "log_min_messages": "warning",
    }
    with Cluster(conf=conf) as c:
        with psycopg.connect(c.dsn(), autocommit=True) as db:
            db.execute("CREATE EXTENSION pg_enkf")
            make_data(db, locations=3, weeks=40)
            db.execute("SELECT enkf.create_twin('smith', 'obs', 'locs', members => 10)")
            db.execute("SELECT count(*) FROM enkf.assimilate('smith', '2023-05-01')")
            db.execute("SELECT count(*) FROM enkf.forecast('smith')")
            db.execute("SELECT enkf.create_roles()")
            db.execute("CREATE ROLE smith LOGIN IN ROLE enkf_analyst")
            db.execute("GRANT SELECT ON obs, locs TO smith")
            db.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('smith', '*')")
            # Slow random joins are cut short, and cost nothing but a 57014.
            db.execute("ALTER ROLE smith SET statement_timeout = '2s'")
        done = subprocess.run(
            ["sqlsmith", f"--target={c.dsn(user='smith')}", "--seed=20261202",
             f"--max-queries={QUERIES}", "--exclude-catalog"],
            capture_output=True, text=True, timeout=1200)
        log = c.log_text()
        # The server is up and answers after the run.
        with psycopg.connect(c.dsn(), autocommit=True) as db:
            assert db.execute("SELECT 1").fetchone() == (1,)
    tail = (done.stdout + done.stderr)[-2000:]
    assert "terminated by signal" not in log and "PANIC" not in log, log[-4000:]
    assert done.returncode == 0, tail
    # Internal errors of statements that involve pg_enkf (the log holds each ERROR line, then
    # its STATEMENT line, both prefixed with the SQLSTATE).
    internal = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("XX000 ERROR:"):
            statement = next((l for l in lines[i + 1:i + 4] if l.startswith("XX000 STATEMENT:")), "")
            if re.search(r"\benkf\.", statement) or "pg_enkf" in line:
                internal.append((line, statement[:300]))
    assert not internal, internal[:5]
    # SQLsmith did reach pg_enkf's objects.
    assert re.search(r"enkf\.", log), "no statement touching enkf.* was logged"
