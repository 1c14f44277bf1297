"""SQLsmith's random queries over pg_enkf's objects, as a role of a given kind, in a cluster of
their own: the shared harness of tests/sql/test_sqlsmith.py (a few thousand queries in the test
command) and bench/sqlsmith.py (100,000 queries per role, figures in docs/benchmarks.md).

SQLsmith (Debian package sqlsmith) builds queries from the catalog; with --exclude-catalog it
draws its relations from the user schemas, here enkf's tables and views with a twin's data in
them, and calls any function the role may, enkf.analyze, enkf.assimilate and enkf.forecast among
them."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field

import psycopg
from pgcluster import Cluster
from support.data import make_data


@dataclass
class Outcome:
    role: str
    queries: int
    seconds: float
    returncode: int
    output_tail: str
    # The server died (a backend terminated by a signal, or a PANIC).
    crashed: bool
    # Internal errors (XX000) of statements that involve pg_enkf: (error line, statement).
    internal: list[tuple[str, str]] = field(default_factory=list)
    # Whether any logged statement touched enkf.* (the run did reach pg_enkf).
    reached_enkf: bool = False
    errors_by_state: dict[str, int] = field(default_factory=dict)


def run(queries: int, kind: str = "analyst", seed: int = 20261202, timeout: float = 7200) -> Outcome:
    """Runs SQLsmith for `queries` queries as a login member of enkf_<kind>."""
    conf = {
        # Every error with its SQLSTATE and statement, for the checks below.
        "log_line_prefix": "'%e '",
        "log_min_error_statement": "error",
        "log_min_messages": "warning",
    }
    role = f"smith_{kind}"
    with Cluster(conf=conf) as c:
        with psycopg.connect(c.dsn(), autocommit=True) as db:
            db.execute("CREATE EXTENSION pg_enkf")
            make_data(db, locations=3, weeks=40)
            db.execute("SELECT enkf.create_twin('smith', 'obs', 'locs', members => 10)")
            db.execute("SELECT count(*) FROM enkf.assimilate('smith', '2023-05-01')")
            db.execute("SELECT count(*) FROM enkf.forecast('smith')")
            db.execute("SELECT enkf.create_roles()")
            db.execute(f"CREATE ROLE {role} LOGIN IN ROLE enkf_{kind}")
            db.execute(f"GRANT SELECT ON obs, locs TO {role}")
            db.execute(f"INSERT INTO enkf.location_grants (role, location) VALUES ('{role}', '*')")
            # Slow random joins are cut short, and cost nothing but a 57014.
            db.execute(f"ALTER ROLE {role} SET statement_timeout = '2s'")
        t0 = time.monotonic()
        done = subprocess.run(
            ["sqlsmith", f"--target={c.dsn(user=role)}", f"--seed={seed}",
             f"--max-queries={queries}", "--exclude-catalog"],
            capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - t0
        log = c.log_text()
        # The server is up and answers after the run.
        with psycopg.connect(c.dsn(), autocommit=True) as db:
            assert db.execute("SELECT 1").fetchone() == (1,)
    out = Outcome(
        role=kind, queries=queries, seconds=seconds, returncode=done.returncode,
        output_tail=(done.stdout + done.stderr)[-2000:],
        crashed="terminated by signal" in log or "PANIC" in log,
        reached_enkf=bool(re.search(r"enkf\.", log)),
    )
    lines = log.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"([0-9A-Z]{5}) ERROR:", line)
        if m:
            out.errors_by_state[m.group(1)] = out.errors_by_state.get(m.group(1), 0) + 1
        if line.startswith("XX000 ERROR:"):
            statement = next((l for l in lines[i + 1:i + 4] if l.startswith("XX000 STATEMENT:")), "")
            if re.search(r"\benkf\.", statement) or "pg_enkf" in line:
                out.internal.append((line, statement[:4000]))
    return out
