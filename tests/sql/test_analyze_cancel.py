"""Cancel and statement_timeout interrupt a long enkf.analyze call promptly, for each method's
long loop, and leave the session usable."""

import threading
import time

import psycopg
import pytest

# Cancelling enkf.analyze, which reads no table: plain storage only (conftest.py).
pytestmark = pytest.mark.plain_only

# 20,000 state elements x 100 members, every element observed: uninterrupted, the serial EAKF
# needs about 20,000 x 4e6 flops (tens of seconds); the LETKF an eigen-solve per element.
SETUP = """
CREATE TABLE big AS
WITH r AS (
  SELECT i, array_agg(sin(i * 0.37 + j * 1.3) ORDER BY j) AS row
  FROM generate_series(1, 20000) i, generate_series(1, 100) j GROUP BY i)
SELECT array_agg(row ORDER BY i) AS e,
       array_agg(0.5::float8 ORDER BY i) AS y,
       array_agg(1.0::float8 ORDER BY i) AS v,
       array_agg(i::int4 ORDER BY i) AS idx
FROM r;
"""

CALLS = {
    "eakf": "SELECT cardinality(enkf.analyze(e, y, v, idx, 'eakf')) FROM big",
    "letkf": "SELECT cardinality(enkf.analyze(e, y, v, idx, 'letkf', loc_radius => 200)) FROM big",
    "enkf-localized": "SELECT cardinality(enkf.analyze(e[1:3000], y[1:3000], v[1:3000], idx[1:3000], 'enkf', loc_radius => 500)) FROM big",
}


@pytest.fixture()
def big(conn):
    conn.execute(SETUP)
    return conn


@pytest.mark.parametrize("method", sorted(CALLS))
def test_statement_timeout_interrupts(big, method):
    big.execute("SET statement_timeout = '400ms'")
    t0 = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled) as err:
        big.execute(CALLS[method])
    elapsed = time.monotonic() - t0
    assert err.value.sqlstate == "57014"
    assert elapsed < 3.0, f"took {elapsed:.2f}s to honour statement_timeout"
    big.execute("RESET statement_timeout")
    assert big.execute("SELECT 1").fetchone() == (1,)


def test_cancel_from_another_session(cluster, dbname, big):
    pid = big.execute("SELECT pg_backend_pid()").fetchone()[0]

    def cancel():
        time.sleep(0.5)
        with psycopg.connect(cluster.dsn(dbname), autocommit=True) as other:
            other.execute("SELECT pg_cancel_backend(%s)", (pid,))

    t = threading.Thread(target=cancel)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        big.execute(CALLS["eakf"])
    elapsed = time.monotonic() - t0
    t.join()
    assert elapsed < 3.5, f"cancel took {elapsed:.2f}s"
    assert big.execute("SELECT 1").fetchone() == (1,)
