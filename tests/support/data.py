"""Synthetic surveillance from the twin's own generator (never real patient-level data), and
observation tables made hypertables on TimescaleDB storage."""

from __future__ import annotations


def timescaledb_schema(conn) -> str | None:
    """The schema of TimescaleDB's functions in the connected database, or None without it."""
    row = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return row[0] if row else None


def hypertable(conn, table, time_column="time", chunk="28 days") -> bool:
    """Makes an observation table a hypertable (its rows moved into chunks of `chunk`) when the
    database has TimescaleDB, as the tests of storage 'timescaledb' want (conftest.py); returns
    whether it did."""
    schema = timescaledb_schema(conn)
    if schema is None:
        return False
    conn.execute(
        f"SELECT {schema}.create_hypertable(%s::regclass, %s, chunk_time_interval => interval '{chunk}', migrate_data => true)",
        (table, time_column),
    )
    return True


def make_data(conn, locations=6, weeks=156, seed=11, table="obs", loc_table="locs", first_week="2022-10-01"):
    """An observation table and a location table from the twin's own synthetic generator; the
    observation table is a hypertable when the database has TimescaleDB (returns whether)."""
    conn.execute(
        f"""CREATE TABLE {table} AS SELECT time, location, value
              FROM enkf.synthetic_surveillance({locations}, {weeks}, '{first_week}', {seed})"""
    )
    made = hypertable(conn, table)
    conn.execute(
        f"""CREATE TABLE {loc_table} AS SELECT DISTINCT location, population
              FROM enkf.synthetic_surveillance({locations}, 1, '{first_week}', {seed})"""
    )
    return made


def truth(conn, locations, seed=11):
    return {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            f"""SELECT location, beta, ihr, max(true_admissions) OVER (PARTITION BY location)
                  FROM enkf.synthetic_surveillance({locations}, 156, '2022-10-01', {seed})"""
        ).fetchall()
    }


def checkpoints(conn, twin):
    return conn.execute(
        """SELECT c.location, c.week_end, c.observed, c.ensemble FROM enkf.checkpoints c
             JOIN enkf.twins t USING (twin_id) WHERE t.name = %s ORDER BY 1, 2""",
        (twin,),
    ).fetchall()
