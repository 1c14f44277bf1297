"""Synthetic twins with data, and snapshots of what pg_enkf keeps, for the operations tests."""

from __future__ import annotations

from support.data import hypertable, make_data

# A short synthetic season: the first WEEKS_BEFORE weeks are loaded at first, the rest arrive
# later ("new data") and must be assimilated from where the twin stopped.
LOCATIONS = 3
WEEKS = 52
FIRST_WEEK = "2022-10-01"
WEEKS_BEFORE = 40
SEED = 7


def load_surveillance(conn) -> None:
    """Creates public.obs (the first WEEKS_BEFORE weeks) and public.locs, from the model's own
    synthetic generator (never real data); obs and obs_all are hypertables when the database has
    TimescaleDB."""
    make_data(conn, LOCATIONS, WEEKS, SEED, table="obs_all", first_week=FIRST_WEEK)
    conn.execute(
        f"""CREATE TABLE obs AS SELECT * FROM obs_all
             WHERE time < date '{FIRST_WEEK}' + {WEEKS_BEFORE} * 7"""
    )
    hypertable(conn, "obs")


def make_twins(conn) -> None:
    """Three twins in different states: assimilated and forecast, assimilated only part of
    the data with its own seed and config, and created but never run."""
    conn.execute("SELECT enkf.create_twin('alpha', 'obs', 'locs', members => 20)")
    conn.execute("SELECT * FROM enkf.assimilate('alpha')")
    conn.execute("SELECT count(*) FROM enkf.forecast('alpha')")
    conn.execute(
        """SELECT enkf.create_twin('beta', 'public.obs', 'locs', members => 12,
                  config => '{"seed": 99, "filter": {"inflation": 1.05}}')"""
    )
    conn.execute(f"SELECT * FROM enkf.assimilate('beta', date '{FIRST_WEEK}' + 20 * 7)")
    conn.execute("SELECT count(*) FROM enkf.forecast('beta', 2, '{0.1, 0.5, 0.9}')")
    conn.execute("SELECT enkf.create_twin('gamma', 'obs', 'locs', members => 8)")


def arrive_new_data(conn) -> None:
    conn.execute("INSERT INTO obs SELECT * FROM obs_all EXCEPT SELECT * FROM obs")


def config_tables(conn) -> list[str]:
    """The tables and sequences pg_enkf registered with pg_extension_config_dump."""
    return [
        r[0]
        for r in conn.execute(
            """SELECT c::regclass::text FROM pg_extension e, unnest(e.extconfig) c
                WHERE e.extname = 'pg_enkf' ORDER BY 1"""
        ).fetchall()
    ]


def snapshot(conn, tables: list[str] | None = None, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every row of every config table, and every sequence's state, in a stable order. With
    `columns`, only those columns of the tables it names (the columns an older version had)."""
    out = {}
    # With an empty search_path, regclass and regrole values (tables and roles by identity,
    # 0.3.0) print as the qualified names that earlier versions stored as text.
    path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
    conn.execute("SET search_path = ''")
    try:
        for t in tables or config_tables(conn):
            kind = conn.execute("SELECT relkind FROM pg_catalog.pg_class WHERE oid = %s::pg_catalog.regclass", (t,)).fetchone()[0]
            if kind == "S":
                out[t] = conn.execute(f"SELECT last_value, is_called FROM {t}").fetchall()
            else:
                cols = ", ".join(f'"{c}"' for c in (columns or {}).get(t, [])) or "*"
                out[t] = conn.execute(
                    f"SELECT * FROM (SELECT {cols} FROM {t}) AS r ORDER BY pg_catalog.to_jsonb(r)::text"
                ).fetchall()
    finally:
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (path,))
    return out


def table_columns(conn, tables: list[str]) -> dict[str, list[str]]:
    """Each table's columns, in order."""
    return {
        t: [r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (t,),
        ).fetchall()]
        for t in tables
    }
