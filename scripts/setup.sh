#!/usr/bin/env bash
# Installs what pg_enkf's demo and tests need on Debian 12, idempotently: Debian packages
# (PostgreSQL 15 and its server headers, pgaudit, libclang, a JDK and the JDBC driver),
# cargo-pgrx 0.18.1 initialised against Debian's PostgreSQL 15, and a Python venv in .venv.
# Quick when everything is already there. Needs root (or sudo) for the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PGRX_VERSION=0.18.1
. scripts/pg.env

say() { printf '\033[1;34m==> %s\033[0m\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Debian packages --------------------------------------------------------------------------
PACKAGES=(
    postgresql-15 postgresql-client-15 postgresql-server-dev-15 postgresql-15-pgaudit
    postgresql-15-pgtap postgresql-15-cron libpostgresql-jdbc-java sqlsmith
    libclang-dev clang gcc make pkg-config libssl-dev openssl sudo ca-certificates
    python3 python3-venv python3-pip git dpkg-dev
)
command -v javac >/dev/null 2>&1 || PACKAGES+=(openjdk-17-jdk-headless)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    # The packaged default cluster (15/main on port 5432) is not used: tests and the demo run
    # their own clusters. Do not create it on a machine that does not have one yet.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        as_root mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust and cargo-pgrx ----------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.95 (rustup) first" >&2; exit 1; }
if [ "$(cargo pgrx --version 2>/dev/null | awk '{print $2}')" != "$PGRX_VERSION" ]; then
    say "installing cargo-pgrx $PGRX_VERSION (takes several minutes once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi
if ! grep -qs "pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    say "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

# --- Python tools -----------------------------------------------------------------------------
REQ=tests/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python tools into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$want" > "$stamp"
fi
