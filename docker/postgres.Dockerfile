# PostgreSQL 16 with TimescaleDB, pgaudit and pg_enkf.
#
# NOT BUILT OR TESTED HERE: the development machine has no Docker engine and no PostgreSQL 16.
# The tested install steps are scripts/setup.sh (Debian packages, cargo-pgrx 0.18.1 initialised
# against the server's pg_config) and `cargo pgrx package` (scripts/test.sh, scripts/package.sh)
# on PostgreSQL 15; this file repeats them for 16. Keep the two in step: Rust 1.95 and
# cargo-pgrx 0.18.1 as in Cargo.toml and scripts/setup.sh, the same build command, the same
# files installed (library, control file, install script, upgrade scripts).
#
#   docker build -f docker/postgres.Dockerfile -t pg_enkf/postgres:16 .
#
# Pinned: base images by tag (pin by digest in a release pipeline), Debian package versions
# by ARG, cargo-pgrx by version, Rust crates by Cargo.lock (--locked).

ARG PG_MAJOR=16
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG PG_IMAGE=postgres:16.10-bookworm

# --- builder: pg_enkf with the pg16 feature -----------------------------------------------------
FROM ${RUST_IMAGE} AS builder
ARG PG_MAJOR
ARG PGRX_VERSION=0.18.1
# The PGDG repository is already configured in the postgres image, not in the Rust image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc | gpg --dearmor -o /usr/share/keyrings/pgdg.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        postgresql-server-dev-${PG_MAJOR} libclang-dev clang gcc make pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-pgrx --version ${PGRX_VERSION} --locked \
 && cargo pgrx init --pg${PG_MAJOR} /usr/lib/postgresql/${PG_MAJOR}/bin/pg_config
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY extension extension
COPY sidecar sidecar
COPY sql sql
# extension/sql is a symlink to ../sql: pgrx installs the upgrade scripts it finds there.
RUN cd extension \
 && cargo pgrx package --pg-config /usr/lib/postgresql/${PG_MAJOR}/bin/pg_config \
        --no-default-features --features pg${PG_MAJOR} --out-dir /pkg \
 && ls /pkg/usr/share/postgresql/${PG_MAJOR}/extension/

# --- runtime -----------------------------------------------------------------------------------
FROM ${PG_IMAGE}
ARG PG_MAJOR
# The TimescaleDB the tests run on (../shared/tools/install-timescaledb.sh; tests/ops/test_docker.py
# checks the two agree).
ARG TIMESCALEDB_VERSION=2.28.3
ARG PGAUDIT_VERSION=16.1
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg openssl \
 && curl -fsSL https://packagecloud.io/timescale/timescaledb/gpgkey | gpg --dearmor -o /usr/share/keyrings/timescaledb.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/timescaledb.gpg] https://packagecloud.io/timescale/timescaledb/debian/ bookworm main" > /etc/apt/sources.list.d/timescaledb.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        "timescaledb-2-postgresql-${PG_MAJOR}=${TIMESCALEDB_VERSION}*" \
        "timescaledb-2-loader-postgresql-${PG_MAJOR}=${TIMESCALEDB_VERSION}*" \
        "postgresql-${PG_MAJOR}-pgaudit=${PGAUDIT_VERSION}*" \
 && apt-get purge -y curl gnupg && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
# Only this version's install script and the upgrade scripts (as scripts/package.sh ships).
COPY --from=builder /pkg/usr/lib/postgresql/ /usr/lib/postgresql/
COPY --from=builder /pkg/usr/share/postgresql/ /usr/share/postgresql/
COPY docker/initdb/ /docker-entrypoint-initdb.d/
# TimescaleDB and pgaudit must be preloaded; pg_enkf need not (it loads on first use). pgaudit
# as docs/hipaa.md asks (statement parameters can carry PHI: not logged). With pgaudit loaded,
# never COPY into a hypertable (it kills the backend, timescale/timescaledb#7667): load a staging
# table and INSERT ... SELECT (docs/operations.md, "TimescaleDB").
CMD ["postgres", \
     "-c", "shared_preload_libraries=timescaledb,pgaudit", \
     "-c", "pgaudit.log=read,write,function,role,ddl", \
     "-c", "pgaudit.log_relation=on", \
     "-c", "pgaudit.log_parameter=off", \
     "-c", "timescaledb.telemetry_level=off"]
