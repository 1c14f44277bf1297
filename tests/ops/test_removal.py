"""Removal: DROP EXTENSION pg_enkf CASCADE leaves nothing of pg_enkf behind in the database or
the cluster, except roles the DBA created by calling enkf.create_roles() (cluster-level, the
DBA's to drop; docs/operations.md), and never the DBA's own data. On TimescaleDB (created first,
the DBA's observation tables hypertables) also no hypertable, chunk, job or policy of pg_enkf's
in TimescaleDB's catalog, and the DBA's hypertables intact."""

from __future__ import annotations

import psycopg
from data import load_surveillance, make_twins
from pgcluster import Cluster

# Named objects per catalog, schema-qualified where it applies: a before/after inventory.
INVENTORY = {
    "namespace": "SELECT nspname FROM pg_namespace",
    # TOAST tables come and go with the DBA's own tables.
    "class": "SELECT oid::regclass::text FROM pg_class WHERE relnamespace <> 'pg_toast'::regnamespace",
    "proc": "SELECT oid::regprocedure::text FROM pg_proc",
    "type": "SELECT oid::regtype::text FROM pg_type WHERE typnamespace <> 'pg_toast'::regnamespace",
    "operator": "SELECT oid::regoperator::text FROM pg_operator",
    "cast": "SELECT format('%s->%s', castsource::regtype, casttarget::regtype) FROM pg_cast",
    "opclass": "SELECT opcname FROM pg_opclass",
    "collation": "SELECT collname FROM pg_collation",
    "language": "SELECT lanname FROM pg_language",
    "event_trigger": "SELECT evtname FROM pg_event_trigger",
    "trigger": "SELECT format('%s on %s', tgname, tgrelid::regclass) FROM pg_trigger",
    "policy": "SELECT format('%s on %s', polname, polrelid::regclass) FROM pg_policy",
    "default_acl": "SELECT format('%s %s %s', defaclrole::regrole, defaclnamespace, defaclacl) FROM pg_default_acl",
    "init_privs": "SELECT pg_describe_object(classoid, objoid, objsubid) FROM pg_init_privs",
    "fdw": "SELECT fdwname FROM pg_foreign_data_wrapper",
    "server": "SELECT srvname FROM pg_foreign_server",
    "publication": "SELECT pubname FROM pg_publication",
    "ts_config": "SELECT cfgname FROM pg_ts_config",
    "extension": "SELECT extname FROM pg_extension",
    "database_settings": "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting",
    # Cluster-wide.
    "role": "SELECT rolname FROM pg_roles",
    "shared_dependency": "SELECT format('%s %s', refobjid::regrole, deptype) FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass AND dbid <> 0",
}


# TimescaleDB's catalog, when it is in the database: hypertables, their chunks, and jobs
# (policies are jobs) with the hypertable each works on.
TIMESCALEDB_INVENTORY = {
    "ts_hypertable": "SELECT format('%s.%s', schema_name, table_name) FROM _timescaledb_catalog.hypertable",
    "ts_chunk": """SELECT format('%s.%s of %s.%s', c.schema_name, c.table_name, h.schema_name, h.table_name)
                     FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id""",
    "ts_job": """SELECT format('%s.%s on %s', j.proc_schema, j.proc_name, coalesce(h.schema_name || '.' || h.table_name, '-'))
                   FROM _timescaledb_catalog.bgw_job j LEFT JOIN _timescaledb_catalog.hypertable h ON h.id = j.hypertable_id""",
}


def inventory(conn) -> dict[str, set[str]]:
    queries = dict(INVENTORY)
    if conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]:
        queries.update(TIMESCALEDB_INVENTORY)
    return {k: {r[0] for r in conn.execute(q).fetchall()} for k, q in queries.items()}


def chunks_of(conn, tables: set[str]) -> set[str]:
    """What TimescaleDB made for the DBA's hypertables: the index on their time column, their chunks and the chunks' indexes."""
    if not conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]:
        return set()
    indexes = {r[0] for r in conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = ANY(%s::regclass[])", (sorted(tables),)).fetchall()}
    return indexes | {r[0] for r in conn.execute(
        """SELECT x.oid::regclass::text FROM _timescaledb_catalog.chunk c
             JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
             JOIN pg_class k ON k.relname = c.table_name AND k.relnamespace = c.schema_name::regnamespace
             JOIN pg_class x ON x.oid = k.oid OR x.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = k.oid)
            WHERE h.schema_name = 'public' AND h.table_name = ANY(%s)""", (sorted(tables),)).fetchall()}


def test_drop_extension_leaves_nothing(storage):
    with Cluster(conf=storage.conf()) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE rm")
        with psycopg.connect(cluster.dsn("rm"), autocommit=True) as conn:
            if storage.timescaledb:
                conn.execute("CREATE EXTENSION timescaledb")
            before = inventory(conn)
            conn.execute("CREATE EXTENSION pg_enkf")
            assert inventory(conn)["role"] == before["role"], "CREATE EXTENSION must not create roles"
            dba_roles = set()
            if conn.execute("SELECT to_regproc('enkf.create_roles') IS NOT NULL").fetchone()[0]:
                # The DBA's explicit call: these roles are theirs (cluster-level, shared by
                # every database), not the extension's.
                dba_roles = {r[0] for r in conn.execute("SELECT role FROM enkf.create_roles() WHERE created").fetchall()}
                assert dba_roles
            load_surveillance(conn)
            make_twins(conn)
            user_tables = {"obs_all", "obs", "locs"}
            user_data = conn.execute("SELECT count(*), sum(value) FROM obs").fetchone()

            conn.execute("DROP EXTENSION pg_enkf CASCADE")

            after = inventory(conn)
            user_chunks = chunks_of(conn, user_tables)
            assert bool(user_chunks) == storage.timescaledb
            assert after["class"] - before["class"] == user_tables | user_chunks
            after["class"] -= user_tables | user_chunks
            user_types = user_tables | {c for c in user_chunks if "_chunk" in c and "_idx" not in c}
            after["type"] -= user_types | {f"{t}[]" for t in user_types}
            if storage.timescaledb:
                # Only the DBA's hypertables and their chunks remain; the jobs are TimescaleDB's own.
                assert after["ts_hypertable"] - before["ts_hypertable"] == {"public.obs", "public.obs_all"}
                after["ts_hypertable"] -= {"public.obs", "public.obs_all"}
                assert all(c.endswith(("of public.obs", "of public.obs_all")) for c in after["ts_chunk"])
                after["ts_chunk"] = before["ts_chunk"]
            after["role"] -= dba_roles
            for kind in after:
                if kind == "shared_dependency":
                    continue
                assert after[kind] == before[kind], f"{kind}: left {after[kind] - before[kind]}, lost {before[kind] - after[kind]}"
            for catalog, col in (("pg_namespace", "nspname"), ("pg_class", "relname"), ("pg_proc", "proname"), ("pg_type", "typname")):
                left = conn.execute(f"SELECT {col} FROM {catalog} WHERE {col} ~* 'enkf'").fetchall()
                assert not left, (catalog, left)
            # The DBA's data is untouched.
            assert conn.execute("SELECT count(*), sum(value) FROM obs").fetchone() == user_data
            # Nothing in this database still depends on the DBA's roles: they drop cleanly.
            if dba_roles:
                assert not {d.split()[0] for d in after["shared_dependency"]} & dba_roles
                conn.execute("DROP ROLE " + ", ".join(sorted(dba_roles, reverse=True)))
